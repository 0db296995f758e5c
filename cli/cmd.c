/*
 * cmd: the table of verbs.
 */
#include "cli.h"

extern const struct cmd_entry cmd_batch_entry;
extern const struct cmd_entry cmd_cancel_entry;
extern const struct cmd_entry cmd_chain_entry;
extern const struct cmd_entry cmd_check_entry;
extern const struct cmd_entry cmd_jobs_entry;
extern const struct cmd_entry cmd_commit_entry;
extern const struct cmd_entry cmd_history_entry;
extern const struct cmd_entry cmd_qmp_entry;
extern const struct cmd_entry cmd_recover_entry;
extern const struct cmd_entry cmd_snapshot_entry;
extern const struct cmd_entry cmd_stream_entry;
extern const struct cmd_entry cmd_watch_entry;

const struct cmd_entry *const cmd_table[] = {
	&cmd_chain_entry,
	&cmd_check_entry,
	&cmd_snapshot_entry,
	&cmd_commit_entry,
	&cmd_stream_entry,
	&cmd_jobs_entry,
	&cmd_cancel_entry,
	&cmd_recover_entry,
	&cmd_history_entry,
	&cmd_watch_entry,
	&cmd_batch_entry,
	&cmd_qmp_entry,
	NULL,
};
