#define _GNU_SOURCE
#include "CFZTun.h"

#ifdef __linux__

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>

const int CFZ_IFNAMSIZ = IFNAMSIZ;

int cfz_tun_open_clone_device(void) { return open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC); }

int cfz_tun_attach(int fd, const char *name, char *out_name) { return cfz_tun_attach_flags(fd, name, out_name, 0); }

int cfz_tun_attach_flags(int fd, const char *name, char *out_name, int vnet_hdr) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    size_t length = strlen(name);
    if (length >= IFNAMSIZ) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(ifr.ifr_name, name, length);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (vnet_hdr ? IFF_VNET_HDR : 0);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) return -1;
    memcpy(out_name, ifr.ifr_name, IFNAMSIZ);
    out_name[IFNAMSIZ - 1] = 0;
    return 0;
}

int cfz_tun_set_offload(int fd, int tso) {
    unsigned int offload = TUN_F_CSUM;
    if (tso) offload |= TUN_F_TSO4 | TUN_F_TSO6;
    return ioctl(fd, TUNSETOFFLOAD, offload);
}

ssize_t cfz_tun_write2(int fd, const void *header, size_t header_length, const void *packet, size_t packet_length) {
    struct iovec iov[2];
    iov[0].iov_base = (void *)header;
    iov[0].iov_len = header_length;
    iov[1].iov_base = (void *)packet;
    iov[1].iov_len = packet_length;
    return writev(fd, iov, 2);
}

int cfz_netlink_route_open(void) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) return -1;
    struct sockaddr_nl local;
    memset(&local, 0, sizeof local);
    local.nl_family = AF_NETLINK;
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

static void termination_set(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
}

int cfz_block_termination_signals(void) {
    sigset_t set;
    termination_set(&set);
    return pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int cfz_wait_termination_signal(void) {
    sigset_t set;
    termination_set(&set);
    int signal = 0;
    int rc = sigwait(&set, &signal);
    return rc == 0 ? signal : -rc;
}

#endif  // __linux__
