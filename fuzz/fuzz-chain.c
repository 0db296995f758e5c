/*
 * fuzz/fuzz-chain: libFuzzer target for the chain decoder (merge/chain).
 *
 * Input: a JSON object {"block": <query-block return>, "nodes":
 * <query-named-block-nodes return>, "graph": <x-debug-query-block-graph
 * return>} (the form of tests/fixtures/NAME.json; any member may be absent
 * or of any type). It is decoded with the graph and without it; a decoded
 * model must hold together (every disk found by its name, every layer by
 * its node name and file name, to_json works), a refusal must say why.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../merge/chain.h"

static void check(const struct merge_chains *ch)
{
	int i, j;

	for (i = 0; i < ch->ndisks; i++) {
		const struct merge_disk *d = &ch->disks[i];
		json_object *o;

		if (d->name == NULL || d->device == NULL || d->nlayers < 1 || d->nlayers > 4096)
			abort();
		if (merge_chains_find(ch, d->name) == NULL)
			abort();
		if (d->qdev != NULL && merge_chains_find(ch, d->qdev) == NULL)
			abort();
		if (d->layers[0].node_name != NULL &&
		    merge_chains_find(ch, d->layers[0].node_name) == NULL)
			abort();
		for (j = 0; j < d->nlayers; j++) {
			const struct merge_layer *l = &d->layers[j];
			int k;

			if (l->filename == NULL || l->format == NULL)
				abort();
			/* node names are looked up first: the first layer with that name */
			if (l->node_name != NULL) {
				k = merge_disk_find_layer(d, l->node_name);
				if (k < 0 || k > j || strcmp(d->layers[k].node_name, l->node_name) != 0)
					abort();
			}
			if (merge_disk_find_layer(d, l->filename) < 0)
				abort();
		}
		o = merge_disk_to_json(d);
		if (o == NULL)
			abort();
		(void)json_object_to_json_string(o);
		json_object_put(o);
	}
	(void)merge_chains_find(ch, "");
}

static void decode(json_object *block, json_object *nodes, json_object *graph)
{
	struct merge_chains *ch = (struct merge_chains *)1;
	struct lm_error err = { 0 };

	if (merge_chains_decode(block, nodes, graph, &ch, &err) == 0) {
		if (ch == NULL || err.code != LM_OK)
			abort();
		check(ch);
		merge_chains_free(ch);
	} else if (ch != NULL || err.code == LM_OK || err.msg[0] == '\0') {
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_tokener *tok = json_tokener_new_ex(64);
	json_object *root, *block = NULL, *nodes = NULL, *graph = NULL;

	if (tok == NULL || size > (size_t)1 << 24)
		abort();
	root = json_tokener_parse_ex(tok, (const char *)data, (int)size);
	json_tokener_free(tok);
	if (root == NULL)
		return 0;
	if (json_object_is_type(root, json_type_object)) {
		json_object_object_get_ex(root, "block", &block);
		json_object_object_get_ex(root, "nodes", &nodes);
		json_object_object_get_ex(root, "graph", &graph);
	}
	decode(block, nodes, graph);
	if (graph != NULL)
		decode(block, nodes, NULL);
	json_object_put(root);
	return 0;
}
