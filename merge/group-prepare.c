/*
 * merge/group, phase "prepare": between resolve and act.
 *
 * Before: group-resolve.c resolved and checked the request. Here the
 * intent goes into the journal (what recovery needs to finish or roll back)
 * before anything is sent that changes state.
 * Next: group-volumes.c (g_prepare: the block devices a run needs), then
 * group-act.c (g_act).
 */
#include "group-int.h"

/* The journal's intent: all recovery needs to finish or roll back. */
static json_object *g_intent(struct merge_group *g)
{
	json_object *o = json_object_new_object(), *disks = json_object_new_array();
	const char *list[4096];
	int i, k, n;

	json_object_object_add(o, "verb", json_object_new_string(merge_verb_name(g->req.verb)));
	json_object_object_add(o, "target", json_object_new_string(qmp_conn_desc(g->c)));
	if (g->req.quiesce != NULL)
		json_object_object_add(o, "qga", json_object_new_string(qga_desc(g->req.quiesce)));
	json_object_object_add(o, "delete", json_object_new_boolean(g->req.delete_removed));
	for (i = 0; i < g->n; i++) {
		struct gjob *j = &g->jobs[i];
		const struct merge_disk *b = g_disk_before(g, j);
		json_object *d = json_object_new_object(), *arr;

		json_object_object_add(d, "disk", json_object_new_string(j->name));
		json_object_object_add(d, "root", json_object_new_string(j->root));
		if (j->job_id != NULL)
			json_object_object_add(d, "job", json_object_new_string(j->job_id));
		if (j->overlay != NULL) {
			json_object_object_add(d, "overlay", json_object_new_string(j->overlay));
			json_object_object_add(d, "overlay-created",
					       json_object_new_boolean(j->overlay_ours));
			if (j->ov_block) {
				/* a block device formatted here (made, with volume) */
				json_object_object_add(d, "overlay-device",
						       json_object_new_boolean(1));
				json_object_object_add(d, "overlay-volume",
						       json_object_new_boolean(j->ov_create));
				json_object_object_add(d, "overlay-node",
						       json_object_new_string(j->new_node));
				json_object_object_add(d, "overlay-file-node",
						       json_object_new_string(j->ov_file_node));
			}
		}
		arr = json_object_new_array();
		n = g_expected(g, j, 0, list, 4096);
		for (k = 0; k < n; k++)
			json_object_array_add(arr, json_object_new_string(list[k]));
		json_object_object_add(d, "before", arr);
		arr = json_object_new_array();
		n = g_expected(g, j, 1, list, 4096);
		for (k = 0; k < n; k++)
			json_object_array_add(arr, json_object_new_string(list[k]));
		json_object_object_add(d, "expect", arr);
		arr = json_object_new_array();
		if (g->req.verb != MERGE_SNAPSHOT) {
			for (k = g->req.verb == MERGE_COMMIT ? j->top : 1; k < j->base; k++) {
				const struct merge_layer *l = &b->layers[k];
				json_object *r = json_object_new_object();

				json_object_object_add(r, "filename", json_object_new_string(l->filename));
				if (l->node_name != NULL)
					json_object_object_add(r, "node", json_object_new_string(l->node_name));
				if (l->file_node != NULL)
					json_object_object_add(r, "file-node",
							       json_object_new_string(l->file_node));
				json_object_array_add(arr, r);
			}
		}
		json_object_object_add(d, "remove", arr);
		json_object_array_add(disks, d);
	}
	json_object_object_add(o, "disks", disks);
	return o;
}

/* The request is resolved and checked: journal the intent and start. */
void g_begin(struct merge_group *g)
{
	if (g->req.adopt) {
		g->changed = 1;
		g->journaled = g->req.journal != NULL;
		if (g_journal(g, "resume", NULL) < 0) {
			g->outcome = MERGE_UNKNOWN;
			g_finish(g);
			return;
		}
	} else if (g->req.journal != NULL && !g->req.dry_run) {
		json_object *intent = g_intent(g);
		struct lm_error e;
		int r = merge_journal_begin(g->req.journal, intent, &e);

		json_object_put(intent);
		if (r < 0) {
			g_error(g, &e);
			g->outcome = MERGE_FAILED;
			g_finish(g);
			return;
		}
		g->journaled = 1;
	}
	g_advance(g, P_PREPARE);
}
