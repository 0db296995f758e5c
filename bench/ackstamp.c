/*
 * bench/ackstamp.c: the host's arrival time of every line the test guest's writer sends on
 * its acknowledgement port (bench/run, step 6).
 *
 *   ackstamp SOCKET OUT
 *
 * Listens on the unix socket SOCKET, accepts one connection (QEMU's
 * `-chardev socket,path=SOCKET` of the virtserialport org.livemerge.ack.0, which connects as
 * a client when QEMU starts) and appends to OUT, for every complete line read, "T LINE" where
 * T is CLOCK_REALTIME in seconds (comparable with bash's $EPOCHREALTIME) taken right after the
 * read() that completed the line. Lines that arrive in one read share its stamp: they did
 * arrive together. OUT only ever receives whole lines, so a reader of the file never sees a
 * cut one. Exits 0 when QEMU closes the connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096

int main(int argc, char **argv)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char in[LINE_MAX_BYTES], line[LINE_MAX_BYTES], out[LINE_MAX_BYTES * 2];
	size_t have = 0;
	int lfd, cfd, ofd;

	if (argc != 3 || strlen(argv[1]) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "usage: ackstamp SOCKET OUT\n");
		return 2;
	}
	strcpy(sa.sun_path, argv[1]);
	ofd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (ofd < 0) {
		perror(argv[2]);
		return 1;
	}
	unlink(argv[1]);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0) {
		perror(argv[1]);
		return 1;
	}
	while ((cfd = accept(lfd, NULL, NULL)) < 0 && errno == EINTR)
		;
	if (cfd < 0) {
		perror("accept");
		return 1;
	}
	close(lfd);
	for (;;) {
		struct timespec ts;
		size_t olen = 0;
		ssize_t n = read(cfd, in, sizeof(in));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		clock_gettime(CLOCK_REALTIME, &ts);
		for (ssize_t i = 0; i < n; i++) {
			if (in[i] != '\n') {
				if (have < sizeof(line) - 1) /* an overlong line is cut, never split */
					line[have++] = in[i];
				continue;
			}
			if (olen + have + 32 > sizeof(out)) { /* flush what we have first */
				if (write(ofd, out, olen) != (ssize_t)olen)
					return 1;
				olen = 0;
			}
			olen += (size_t)snprintf(out + olen, sizeof(out) - olen, "%lld.%06ld %.*s\n",
						 (long long)ts.tv_sec, ts.tv_nsec / 1000, (int)have, line);
			have = 0;
		}
		if (olen && write(ofd, out, olen) != (ssize_t)olen) {
			perror(argv[2]);
			return 1;
		}
	}
	return 0;
}
