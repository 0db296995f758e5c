/*
 * merge/chain: decoding QEMU's block reports into disks and chains.
 *
 * The layers of a chain come from the nested "image"/"backing-image" of the
 * active layer's node, exactly what `qemu-img info --backing-chain` shows.
 * Node names of the layers below come from the block graph's "backing"
 * edges where QEMU reports the graph, otherwise from matching each
 * backing file name to the one format node that has it open.
 */
#include "chain.h"

#include <stdlib.h>
#include <string.h>

struct graph_node {
	int64_t id;
	const char *name;
	int is_backend;
	int64_t backing; /* id of the "backing" child, -1 */
	int64_t file;    /* id of the "file" child, -1 */
	int64_t root;    /* backend: id of the "root" child, -1 */
	int has_driver_parent;
};

struct decode {
	json_object *nodes; /* named nodes array */
	struct graph_node *g;
	size_t ng;
	struct merge_chains *ch;
	struct lm_error *err;
};

static const char *jstr(json_object *o, const char *key)
{
	json_object *v;

	if (o != NULL && json_object_object_get_ex(o, key, &v) &&
	    json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return NULL;
}

static json_object *jobj(json_object *o, const char *key, json_type t)
{
	json_object *v;

	if (o != NULL && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, t))
		return v;
	return NULL;
}

static int64_t jint(json_object *o, const char *key, int64_t dflt)
{
	json_object *v = jobj(o, key, json_type_int);

	return v ? json_object_get_int64(v) : dflt;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static json_object *named_node(struct decode *d, const char *name)
{
	size_t i, n = json_object_array_length(d->nodes);

	if (name == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(d->nodes, i);
		const char *nn = jstr(o, "node-name");

		if (nn != NULL && strcmp(nn, name) == 0)
			return o;
	}
	return NULL;
}

static struct graph_node *graph_by_id(struct decode *d, int64_t id)
{
	size_t i;

	for (i = 0; i < d->ng; i++)
		if (d->g[i].id == id)
			return &d->g[i];
	return NULL;
}

static struct graph_node *graph_by_name(struct decode *d, const char *name)
{
	size_t i;

	for (i = 0; i < d->ng; i++)
		if (!d->g[i].is_backend && strcmp(d->g[i].name, name) == 0)
			return &d->g[i];
	return NULL;
}

static int graph_load(struct decode *d, json_object *graph)
{
	json_object *nodes = jobj(graph, "nodes", json_type_array);
	json_object *edges = jobj(graph, "edges", json_type_array);
	size_t i, n;

	if (nodes == NULL || edges == NULL)
		return lm_error_set(d->err, LM_ERR_PROTO, "block graph without nodes or edges");
	n = json_object_array_length(nodes);
	d->g = calloc(n ? n : 1, sizeof(*d->g));
	if (d->g == NULL)
		return lm_error_set(d->err, LM_ERR_NOMEM, "out of memory");
	for (i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(nodes, i);
		const char *type = jstr(o, "type"), *name = jstr(o, "name");

		if (type == NULL || name == NULL || jobj(o, "id", json_type_int) == NULL)
			return lm_error_set(d->err, LM_ERR_PROTO, "block graph node malformed");
		d->g[d->ng].id = jint(o, "id", -1);
		d->g[d->ng].name = name;
		d->g[d->ng].is_backend = strcmp(type, "block-backend") == 0;
		d->g[d->ng].backing = d->g[d->ng].root = d->g[d->ng].file = -1;
		if (strcmp(type, "block-backend") == 0 || strcmp(type, "block-driver") == 0)
			d->ng++;
	}
	n = json_object_array_length(edges);
	for (i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(edges, i);
		const char *name = jstr(o, "name");
		struct graph_node *par = graph_by_id(d, jint(o, "parent", -1));
		struct graph_node *child = graph_by_id(d, jint(o, "child", -1));

		if (name == NULL || par == NULL || child == NULL)
			continue; /* edges of jobs and other parents */
		if (par->is_backend) {
			if (strcmp(name, "root") == 0)
				par->root = child->id;
			continue;
		}
		child->has_driver_parent = 1;
		if (strcmp(name, "backing") == 0)
			par->backing = child->id;
		else if (strcmp(name, "file") == 0)
			par->file = child->id;
	}
	return 0;
}

static int is_protocol_driver(const char *drv)
{
	static const char *const protocols[] = { "file", "host_device", "host_cdrom", "nbd",
						 "iscsi", "rbd", "ssh", "http", "https", "nfs",
						 "gluster", "null-co", "null-aio", "nvme", NULL };
	int i;

	for (i = 0; protocols[i] != NULL; i++)
		if (strcmp(drv, protocols[i]) == 0)
			return 1;
	return 0;
}

int merge_driver_is_filter(const char *drv)
{
	static const char *const filters[] = { "mirror_top", "commit_top", "copy-on-read",
					       "throttle", "preallocate", "compress",
					       "copy-before-write", "blklogwrites", "blkdebug",
					       "blkreplay", NULL };
	int i;

	for (i = 0; drv != NULL && filters[i] != NULL; i++)
		if (strcmp(drv, filters[i]) == 0)
			return 1;
	return 0;
}

int merge_driver_is_job_filter(const char *drv)
{
	/* the filters a VM may be started with; every other one is a job's */
	return merge_driver_is_filter(drv) && strcmp(drv, "throttle") != 0 &&
	       strcmp(drv, "preallocate") != 0 && strcmp(drv, "compress") != 0;
}

/*
 * Without a graph: the one format node that has file open. The depth only
 * breaks a tie: query-named-block-nodes with flat=true (what merge/query.c
 * asks for) reports backing_file_depth 0 for EVERY node on QEMU 7.2 (QEMU
 * counts it while walking the chain, which flat skips), so requiring it, as
 * this did, found no node below the top of any real chain.
 */
static const char *match_backing_node(struct decode *d, const char *file, int64_t depth)
{
	size_t i, n = json_object_array_length(d->nodes);
	const char *found = NULL, *found_at_depth = NULL;
	int count = 0, count_at_depth = 0;

	for (i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(d->nodes, i);
		const char *f = jstr(o, "file"), *drv = jstr(o, "drv");

		if (f == NULL || drv == NULL || strcmp(f, file) != 0 || is_protocol_driver(drv) ||
		    merge_driver_is_filter(drv))
			continue;
		found = jstr(o, "node-name");
		count++;
		if (jint(o, "backing_file_depth", -1) == depth) {
			found_at_depth = found;
			count_at_depth++;
		}
	}
	if (count == 1)
		return found;
	return count_at_depth == 1 ? found_at_depth : NULL;
}

static int layer_fill(struct merge_layer *l, json_object *node, const char *node_name)
{
	json_object *image = jobj(node, "image", json_type_object);
	json_object *cache = jobj(node, "cache", json_type_object);
	const char *fn = jstr(image, "filename"), *fmt = jstr(image, "format");

	if (fn == NULL || fmt == NULL)
		return -1;
	l->filename = strdup(fn);
	l->format = strdup(fmt);
	l->virtual_size = jint(image, "virtual-size", -1);
	l->backing_filename = dup_or_null(jstr(image, "backing-filename"));
	l->node_name = dup_or_null(node_name);
	l->read_only = json_object_get_boolean(jobj(node, "ro", json_type_boolean));
	l->cache_direct = json_object_get_boolean(jobj(cache, "direct", json_type_boolean));
	l->cache_no_flush = json_object_get_boolean(jobj(cache, "no-flush", json_type_boolean));
	l->detect_zeroes = dup_or_null(jstr(node, "detect_zeroes"));
	if (l->filename == NULL || l->format == NULL)
		return -1;
	return 0;
}

/*
 * The named-node entry of what holds layer l (node: the layer's own entry):
 * the layer itself when it is a protocol node, else its file child, told by
 * the graph or else the one protocol node that has the same file open.
 * NULL when QEMU does not tell.
 */
static json_object *protocol_node(struct decode *d, json_object *node, const struct merge_layer *l)
{
	const char *drv = jstr(node, "drv");
	json_object *found = NULL;
	size_t i, n = json_object_array_length(d->nodes);

	if (drv != NULL && is_protocol_driver(drv))
		return node;
	if (l->file_node != NULL)
		return named_node(d, l->file_node);
	for (i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(d->nodes, i);
		const char *f = jstr(o, "file"), *pdrv = jstr(o, "drv");

		if (f == NULL || pdrv == NULL || !is_protocol_driver(pdrv) ||
		    strcmp(f, l->filename) != 0)
			continue;
		if (found != NULL)
			return NULL; /* the same file open twice: cannot tell which */
		found = o;
	}
	return found;
}

static int layer_fill_protocol(struct decode *d, struct merge_layer *l, json_object *node)
{
	json_object *p = protocol_node(d, node, l);
	const char *drv = jstr(p, "drv");

	l->size = jint(jobj(p, "image", json_type_object), "virtual-size", -1);
	if (drv != NULL && (l->protocol = strdup(drv)) == NULL)
		return lm_error_set(d->err, LM_ERR_NOMEM, "out of memory");
	return 0;
}

/*
 * The node under filter node name: its backing child where it has one
 * (mirror_top, commit_top), else its file child (copy-on-read, throttle),
 * from the graph; without a graph, the one format node that has the same
 * file open (a filter reports its child's file as its own). NULL if none.
 */
static const char *filter_child(struct decode *d, const char *name)
{
	json_object *node = named_node(d, name);

	if (d->g != NULL) {
		struct graph_node *gn = graph_by_name(d, name);
		struct graph_node *c = gn ? graph_by_id(d, gn->backing) : NULL;

		if (c == NULL && gn != NULL)
			c = graph_by_id(d, gn->file);
		return c ? c->name : NULL;
	}
	return jstr(node, "file") ? match_backing_node(d, jstr(node, "file"), -1) : NULL;
}

/* The first node at or below name that is not a filter; with disk, each
 * filter passed is recorded on it, above layer index disk->nlayers. */
static const char *skip_filters(struct decode *d, struct merge_disk *disk, const char *name)
{
	int hops = 0;

	while (name != NULL && merge_driver_is_filter(jstr(named_node(d, name), "drv"))) {
		if (disk != NULL) {
			struct merge_filter *nf, *f;

			nf = realloc(disk->filters, sizeof(*nf) * (size_t)(disk->nfilters + 1));
			if (nf == NULL)
				return NULL;
			disk->filters = nf;
			f = &nf[disk->nfilters++];
			f->node_name = strdup(name);
			f->driver = strdup(jstr(named_node(d, name), "drv"));
			f->above = disk->nlayers;
			if (f->node_name == NULL || f->driver == NULL)
				return NULL;
		}
		if (++hops > 64)
			return NULL;
		name = filter_child(d, name);
	}
	return name;
}

static int disk_build_chain(struct decode *d, struct merge_disk *disk, const char *top)
{
	const char *cur = skip_filters(d, disk, top);
	int cap = 0;

	if (cur == NULL)
		return lm_error_set(d->err, LM_ERR_PROTO,
				    "cannot tell which layer filter node '%s' sits on", top);
	while (cur != NULL) {
		json_object *node = named_node(d, cur);
		json_object *image = jobj(node, "image", json_type_object);
		const char *backing = jstr(node, "backing_file");
		struct merge_layer *l;

		if (image == NULL)
			return lm_error_set(d->err, LM_ERR_PROTO,
					    "node '%s' is not among the named nodes", cur);
		if (disk->nlayers == cap) {
			struct merge_layer *nl;

			if (cap >= 4096)
				return lm_error_set(d->err, LM_ERR_PROTO, "backing chain too deep");
			cap = cap ? cap * 2 : 4;
			nl = realloc(disk->layers, sizeof(*nl) * (size_t)cap);
			if (nl == NULL)
				return lm_error_set(d->err, LM_ERR_NOMEM, "out of memory");
			disk->layers = nl;
		}
		l = &disk->layers[disk->nlayers++];
		memset(l, 0, sizeof(*l));
		l->size = l->allocated = -1;
		if (layer_fill(l, node, cur) < 0)
			return lm_error_set(d->err, LM_ERR_PROTO,
					    "image of node '%s' lacks filename or format", cur);
		if (d->g != NULL) {
			struct graph_node *gn = graph_by_name(d, cur);
			struct graph_node *f = gn ? graph_by_id(d, gn->file) : NULL;

			if (f != NULL && (l->file_node = strdup(f->name)) == NULL)
				return lm_error_set(d->err, LM_ERR_NOMEM, "out of memory");
		}
		if (layer_fill_protocol(d, l, node) < 0)
			return -1;
		if (backing == NULL)
			break;
		/* the node of the next layer down */
		if (d->g != NULL) {
			struct graph_node *gn = graph_by_name(d, cur);
			struct graph_node *b = gn ? graph_by_id(d, gn->backing) : NULL;

			cur = b ? skip_filters(d, disk, b->name) : NULL;
		} else {
			cur = match_backing_node(d, backing, jint(node, "backing_file_depth", 0) - 1);
		}
		if (cur == NULL)
			return lm_error_set(d->err, LM_ERR_PROTO,
					    "cannot tell which node has backing file '%s' open",
					    backing);
	}
	return 0;
}

static const char *qdev_id_of(const char *qdev, char *buf, size_t len)
{
	static const char pfx[] = "/machine/peripheral/";
	const char *s, *e;

	if (qdev == NULL || strncmp(qdev, pfx, sizeof(pfx) - 1) != 0)
		return NULL;
	s = qdev + sizeof(pfx) - 1;
	e = strchr(s, '/');
	if (e == NULL)
		e = s + strlen(s);
	if ((size_t)(e - s) >= len || e == s)
		return NULL;
	memcpy(buf, s, (size_t)(e - s));
	buf[e - s] = '\0';
	return buf;
}

static struct merge_disk *disk_add(struct decode *d)
{
	struct merge_disk *nd = realloc(d->ch->disks, sizeof(*nd) * (size_t)(d->ch->ndisks + 1));

	if (nd == NULL)
		return NULL;
	d->ch->disks = nd;
	nd = &nd[d->ch->ndisks++];
	memset(nd, 0, sizeof(*nd));
	return nd;
}

static int disk_has_top(struct decode *d, const char *top)
{
	int i;

	for (i = 0; i < d->ch->ndisks; i++)
		if (d->ch->disks[i].layers != NULL && d->ch->disks[i].layers[0].node_name != NULL &&
		    strcmp(d->ch->disks[i].layers[0].node_name, top) == 0)
			return 1;
	return 0;
}

static int disk_from_top(struct decode *d, const char *device, const char *qdev, const char *top)
{
	struct merge_disk *disk = disk_add(d);
	char idbuf[256];
	const char *qid = qdev_id_of(qdev, idbuf, sizeof(idbuf));

	if (disk == NULL)
		return lm_error_set(d->err, LM_ERR_NOMEM, "out of memory");
	disk->device = strdup(device ? device : "");
	disk->qdev = dup_or_null(qdev);
	disk->qdev_id = dup_or_null(qid);
	if (qid != NULL)
		disk->name = strdup(qid);
	else if (device != NULL && *device != '\0')
		disk->name = strdup(device);
	else if (qdev != NULL && *qdev != '\0')
		disk->name = strdup(qdev);
	else
		disk->name = strdup(top);
	if (disk->device == NULL || disk->name == NULL)
		return lm_error_set(d->err, LM_ERR_NOMEM, "out of memory");
	return disk_build_chain(d, disk, top);
}

/*
 * Where a device's chain starts: query-block names the top layer and hides
 * the filters a job put above it; the graph's backend of that device shows
 * them. The backend's root when the filters under it lead to top, else top.
 */
static const char *backend_root(struct decode *d, const char *device, const char *qdev,
				const char *top)
{
	const char *name = device != NULL && *device != '\0' ? device : qdev;
	size_t i;

	for (i = 0; name != NULL && i < d->ng; i++) {
		struct graph_node *root = graph_by_id(d, d->g[i].root);
		const char *below;

		if (!d->g[i].is_backend || root == NULL || strcmp(d->g[i].name, name) != 0)
			continue;
		below = skip_filters(d, NULL, root->name);
		return below != NULL && strcmp(below, top) == 0 ? root->name : top;
	}
	return top;
}

/* Storage daemon without a graph: format nodes that are nobody's backing. */
static int tops_without_graph(struct decode *d)
{
	size_t i, j, n = json_object_array_length(d->nodes);

	for (i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(d->nodes, i);
		const char *nn = jstr(o, "node-name"), *drv = jstr(o, "drv"), *f = jstr(o, "file");
		int is_backing = 0;

		if (nn == NULL || drv == NULL || f == NULL || is_protocol_driver(drv) ||
		    disk_has_top(d, nn))
			continue;
		for (j = 0; j < n && !is_backing; j++) {
			const char *bf = jstr(json_object_array_get_idx(d->nodes, j), "backing_file");

			is_backing = bf != NULL && strcmp(bf, f) == 0;
		}
		if (!is_backing && disk_from_top(d, NULL, NULL, nn) < 0)
			return -1;
	}
	return 0;
}

int merge_chains_decode(json_object *query_block, json_object *named_nodes, json_object *graph,
			struct merge_chains **out, struct lm_error *err)
{
	struct decode d = { .nodes = named_nodes, .err = err };
	size_t i, n;

	*out = NULL;
	if (!json_object_is_type(query_block, json_type_array) ||
	    !json_object_is_type(named_nodes, json_type_array))
		return lm_error_set(err, LM_ERR_PROTO, "block report is not an array");
	d.ch = calloc(1, sizeof(*d.ch));
	if (d.ch == NULL)
		return lm_error_set(err, LM_ERR_NOMEM, "out of memory");
	if (graph != NULL && json_object_is_type(graph, json_type_object) && graph_load(&d, graph) < 0)
		goto fail;
	n = json_object_array_length(named_nodes);
	d.ch->nodes = calloc(n ? n : 1, sizeof(*d.ch->nodes));
	if (d.ch->nodes == NULL) {
		lm_error_set(err, LM_ERR_NOMEM, "out of memory");
		goto fail;
	}
	for (i = 0; i < n; i++) {
		const char *nn = jstr(json_object_array_get_idx(named_nodes, i), "node-name");

		if (nn != NULL && (d.ch->nodes[d.ch->nnodes++] = strdup(nn)) == NULL) {
			lm_error_set(err, LM_ERR_NOMEM, "out of memory");
			goto fail;
		}
	}
	n = json_object_array_length(query_block);
	for (i = 0; i < n; i++) {
		json_object *b = json_object_array_get_idx(query_block, i);
		json_object *ins = jobj(b, "inserted", json_type_object);
		const char *top = jstr(ins, "node-name");

		if (ins == NULL)
			continue; /* empty drive */
		if (top == NULL) {
			lm_error_set(err, LM_ERR_PROTO, "query-block entry without node-name");
			goto fail;
		}
		if (disk_from_top(&d, jstr(b, "device"), jstr(b, "qdev"),
				  backend_root(&d, jstr(b, "device"), jstr(b, "qdev"), top)) < 0)
			goto fail;
	}
	if (d.g != NULL) {
		/* anonymous backends query-block does not list (storage daemon exports) */
		for (i = 0; i < d.ng; i++) {
			struct graph_node *root = graph_by_id(&d, d.g[i].root);
			const char *top;

			if (!d.g[i].is_backend || root == NULL || root->is_backend ||
			    named_node(&d, root->name) == NULL)
				continue;
			/* a job's filter above a disk's top is that disk's */
			top = skip_filters(&d, NULL, root->name);
			if (top == NULL || disk_has_top(&d, top) || disk_has_top(&d, root->name))
				continue;
			if (disk_from_top(&d, d.g[i].name[0] == '/' ? "" : d.g[i].name,
					  d.g[i].name[0] == '/' ? d.g[i].name : NULL, root->name) < 0)
				goto fail;
		}
	} else if (d.ch->ndisks == 0 && tops_without_graph(&d) < 0) {
		goto fail;
	}
	free(d.g);
	*out = d.ch;
	return 0;
fail:
	free(d.g);
	merge_chains_free(d.ch);
	return -1;
}

static void disk_clear(struct merge_disk *d)
{
	int j;

	for (j = 0; j < d->nlayers; j++) {
		free(d->layers[j].node_name);
		free(d->layers[j].file_node);
		free(d->layers[j].filename);
		free(d->layers[j].format);
		free(d->layers[j].backing_filename);
		free(d->layers[j].detect_zeroes);
		free(d->layers[j].protocol);
	}
	free(d->layers);
	for (j = 0; j < d->nfilters; j++) {
		free(d->filters[j].node_name);
		free(d->filters[j].driver);
	}
	free(d->filters);
	free(d->name);
	free(d->device);
	free(d->qdev);
	free(d->qdev_id);
}

/* 1 if node is the disk's active layer or a filter above it (an export
 * serves a job's filter while the job runs). */
static int disk_top_is(const struct merge_disk *d, const char *node)
{
	int i;

	if (d->nlayers == 0)
		return 0;
	if (d->layers[0].node_name != NULL && strcmp(d->layers[0].node_name, node) == 0)
		return 1;
	for (i = 0; i < d->nfilters; i++)
		if (d->filters[i].above == 0 && strcmp(d->filters[i].node_name, node) == 0)
			return 1;
	return 0;
}

int merge_chains_name_exports(struct merge_chains *ch, json_object *exports)
{
	size_t i, n;
	int k, kept;

	if (exports == NULL || !json_object_is_type(exports, json_type_array))
		return 0;
	n = json_object_array_length(exports);
	for (k = 0, kept = 0; k < ch->ndisks; k++) {
		struct merge_disk *d = &ch->disks[k];
		int anonymous = d->qdev == NULL && d->device[0] == '\0', served = 0;

		for (i = 0; anonymous && i < n && !served; i++) {
			json_object *e = json_object_array_get_idx(exports, i);
			const char *id = jstr(e, "id"), *node = jstr(e, "node-name");
			char *nn;

			if (id == NULL || node == NULL || !disk_top_is(d, node))
				continue;
			if ((nn = strdup(id)) == NULL)
				return -1;
			free(d->name);
			d->name = nn;
			served = 1;
		}
		if (anonymous && !served) {
			disk_clear(d);
			continue;
		}
		if (kept != k)
			ch->disks[kept] = *d;
		kept++;
	}
	ch->ndisks = kept;
	return 0;
}

void merge_chains_free(struct merge_chains *ch)
{
	int i;

	if (ch == NULL)
		return;
	for (i = 0; i < ch->ndisks; i++)
		disk_clear(&ch->disks[i]);
	for (i = 0; i < ch->nnodes; i++)
		free(ch->nodes[i]);
	free(ch->nodes);
	free(ch->disks);
	free(ch);
}

int merge_chains_add_stats(struct merge_chains *ch, json_object *stats, struct lm_error *err)
{
	size_t i, n;
	int k, j;

	if (!json_object_is_type(stats, json_type_array))
		return lm_error_set(err, LM_ERR_PROTO, "block statistics are not an array");
	n = json_object_array_length(stats);
	for (k = 0; k < ch->ndisks; k++) {
		for (j = 0; j < ch->disks[k].nlayers; j++) {
			struct merge_layer *l = &ch->disks[k].layers[j];

			for (i = 0; i < n && l->node_name != NULL; i++) {
				json_object *e = json_object_array_get_idx(stats, i);
				json_object *child = jobj(e, "parent", json_type_object);
				const char *nn = jstr(e, "node-name");

				if (nn == NULL || strcmp(nn, l->node_name) != 0)
					continue;
				/* a format node's writes land in its protocol child */
				l->allocated = jint(jobj(child ? child : e, "stats", json_type_object),
						    "wr_highest_offset", -1);
				break;
			}
		}
	}
	return 0;
}

int merge_chains_has_node(const struct merge_chains *ch, const char *node)
{
	int i;

	for (i = 0; i < ch->nnodes; i++)
		if (strcmp(ch->nodes[i], node) == 0)
			return 1;
	return 0;
}

static int streq(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

struct merge_disk *merge_chains_find(const struct merge_chains *ch, const char *name)
{
	int i;

	for (i = 0; i < ch->ndisks; i++) {
		struct merge_disk *d = &ch->disks[i];

		if (streq(d->name, name) || streq(d->qdev_id, name) || streq(d->qdev, name) ||
		    (d->device[0] != '\0' && streq(d->device, name)))
			return d;
	}
	for (i = 0; i < ch->ndisks; i++) {
		struct merge_disk *d = &ch->disks[i];

		if (d->nlayers > 0 && streq(d->layers[0].node_name, name))
			return d;
	}
	return NULL;
}

struct merge_disk *merge_chains_find_files(const struct merge_chains *ch, const char *const *files,
					   int n)
{
	int i, k;

	for (i = 0; i < ch->ndisks; i++) {
		struct merge_disk *d = &ch->disks[i];

		if (d->nlayers != n)
			continue;
		for (k = 0; k < n && streq(d->layers[k].filename, files[k]); k++)
			;
		if (k == n)
			return d;
	}
	return NULL;
}

int merge_disk_find_layer(const struct merge_disk *d, const char *layer)
{
	int i;

	for (i = 0; i < d->nlayers; i++)
		if (streq(d->layers[i].node_name, layer))
			return i;
	for (i = 0; i < d->nlayers; i++)
		if (streq(d->layers[i].filename, layer))
			return i;
	return -1;
}

const char *merge_layer_type(const struct merge_layer *l)
{
	if (l->protocol == NULL)
		return NULL;
	if (strcmp(l->protocol, "host_device") == 0)
		return "block";
	return l->protocol; /* "file", or nbd, rbd ... as QEMU names them */
}

int merge_layer_is_block(const struct merge_layer *l)
{
	const char *t = merge_layer_type(l);

	return t != NULL && strcmp(t, "block") == 0;
}

static void add_str(json_object *o, const char *key, const char *val)
{
	if (val != NULL)
		json_object_object_add(o, key, json_object_new_string(val));
}

json_object *merge_disk_to_json(const struct merge_disk *d)
{
	json_object *o = json_object_new_object();
	json_object *arr = json_object_new_array();
	int i;

	if (o == NULL || arr == NULL) {
		json_object_put(o);
		json_object_put(arr);
		return NULL;
	}
	add_str(o, "disk", d->name);
	add_str(o, "device", d->device);
	add_str(o, "qdev", d->qdev);
	add_str(o, "node-name", d->nlayers > 0 ? d->layers[0].node_name : NULL);
	for (i = 0; i < d->nlayers; i++) {
		const struct merge_layer *l = &d->layers[i];
		json_object *lo = json_object_new_object();

		if (lo == NULL)
			break;
		add_str(lo, "node-name", l->node_name);
		add_str(lo, "filename", l->filename);
		add_str(lo, "format", l->format);
		json_object_object_add(lo, "virtual-size", json_object_new_int64(l->virtual_size));
		add_str(lo, "backing-filename", l->backing_filename);
		add_str(lo, "type", merge_layer_type(l));
		if (l->size >= 0)
			json_object_object_add(lo, "size", json_object_new_int64(l->size));
		if (l->allocated >= 0)
			json_object_object_add(lo, "allocated", json_object_new_int64(l->allocated));
		json_object_array_add(arr, lo);
	}
	json_object_object_add(o, "chain", arr);
	if (d->nfilters > 0) {
		json_object *fa = json_object_new_array();

		for (i = 0; fa != NULL && i < d->nfilters; i++) {
			const struct merge_filter *f = &d->filters[i];
			json_object *fo = json_object_new_object();

			if (fo == NULL)
				break;
			add_str(fo, "node-name", f->node_name);
			add_str(fo, "driver", f->driver);
			add_str(fo, "above", f->above < d->nlayers ? d->layers[f->above].node_name
								   : NULL);
			json_object_array_add(fa, fo);
		}
		if (fa != NULL)
			json_object_object_add(o, "filters", fa);
	}
	return o;
}

json_object *merge_chains_state_json(const struct merge_chains *ch)
{
	json_object *arr = json_object_new_array();
	int i;

	for (i = 0; arr != NULL && i < ch->ndisks; i++) {
		json_object *d = merge_disk_to_json(&ch->disks[i]), *chain;
		size_t k;

		if (d == NULL)
			continue;
		/* what QEMU wrote since it opened a layer is no part of the chain */
		if (json_object_object_get_ex(d, "chain", &chain))
			for (k = 0; k < json_object_array_length(chain); k++)
				json_object_object_del(json_object_array_get_idx(chain, k),
						       "allocated");
		json_object_array_add(arr, d);
	}
	return arr;
}
