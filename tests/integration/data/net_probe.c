/* Run in the guest by the integration tests: tries to reach a TCP port the test
 * opened on the host's loopback, through QEMU's user network (host = 10.0.2.2).
 * The lab forbids that (restrict=on): PASS means the guest could not connect. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct sockaddr_in host = { .sin_family = AF_INET };
	struct pollfd pfd = { .events = POLLOUT };
	int port = 0, err = 0, rc;
	socklen_t len = sizeof(err);

	for (int i = 1; i < argc; i++)
		if (!strncmp(argv[i], "--port=", 7))
			port = atoi(argv[i] + 7);
	if (port <= 0) {
		puts("ERROR: no --port=N");
		return 2;
	}
	host.sin_port = htons(port);
	inet_pton(AF_INET, "10.0.2.2", &host.sin_addr);
	pfd.fd = socket(AF_INET, SOCK_STREAM, 0);
	if (pfd.fd < 0 || fcntl(pfd.fd, F_SETFL, O_NONBLOCK) < 0) {
		printf("ERROR: socket: %s\n", strerror(errno));
		return 2;
	}
	rc = connect(pfd.fd, (struct sockaddr *)&host, sizeof(host));
	if (rc < 0 && errno != EINPROGRESS) {
		printf("PASS: connect to 10.0.2.2:%d failed: %s\n", port, strerror(errno));
		return 0;
	}
	if (rc < 0) {
		if (poll(&pfd, 1, 5000) == 0) {
			printf("PASS: no answer from 10.0.2.2:%d within 5 s\n", port);
			return 0;
		}
		getsockopt(pfd.fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			printf("PASS: connect to 10.0.2.2:%d failed: %s\n", port, strerror(err));
			return 0;
		}
	}
	(void)!write(pfd.fd, "guest was here\n", 15);
	printf("FAIL: the guest reached the host's loopback port %d through 10.0.2.2\n", port);
	return 1;
}
