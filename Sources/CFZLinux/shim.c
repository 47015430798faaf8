#define _GNU_SOURCE
#include "CFZLinux.h"

#ifdef __linux__

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#include <netinet/udp.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef SO_REUSEPORT
#define SO_REUSEPORT 15
#endif

// The Swift side relies on these: it allocates arrays of cfz_mmsghdr and hands them to the kernel.
_Static_assert(sizeof(struct cfz_mmsghdr) == sizeof(struct mmsghdr), "cfz_mmsghdr size differs from mmsghdr");
_Static_assert(offsetof(struct cfz_mmsghdr, msg_hdr) == offsetof(struct mmsghdr, msg_hdr), "msg_hdr offset");
_Static_assert(offsetof(struct cfz_mmsghdr, msg_len) == offsetof(struct mmsghdr, msg_len), "msg_len offset");
_Static_assert(_Alignof(struct cfz_mmsghdr) == _Alignof(struct mmsghdr), "cfz_mmsghdr alignment");

int cfz_recvmmsg(int fd, struct cfz_mmsghdr *vec, unsigned int vlen, int flags) {
    return recvmmsg(fd, (struct mmsghdr *)vec, vlen, flags, NULL);
}

int cfz_sendmmsg(int fd, struct cfz_mmsghdr *vec, unsigned int vlen, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)vec, vlen, flags);
}

int cfz_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int cfz_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev);
}

int cfz_epoll_wait(int epfd, void *events, int maxevents, int timeout_ms) {
    return epoll_wait(epfd, (struct epoll_event *)events, maxevents, timeout_ms);
}

size_t cfz_epoll_event_size(void) { return sizeof(struct epoll_event); }

uint32_t cfz_epoll_event_mask(const void *events, int i) { return ((const struct epoll_event *)events)[i].events; }

uint64_t cfz_epoll_event_data(const void *events, int i) { return ((const struct epoll_event *)events)[i].data.u64; }

const int CFZ_EPOLL_CTL_ADD = EPOLL_CTL_ADD;
const int CFZ_EPOLL_CTL_MOD = EPOLL_CTL_MOD;
const int CFZ_EPOLL_CTL_DEL = EPOLL_CTL_DEL;
const uint32_t CFZ_EPOLLIN = EPOLLIN;
const uint32_t CFZ_EPOLLOUT = EPOLLOUT;
const uint32_t CFZ_EPOLLERR = EPOLLERR;
const uint32_t CFZ_EPOLLHUP = EPOLLHUP;
const uint32_t CFZ_EPOLLRDHUP = EPOLLRDHUP;

int cfz_eventfd_create(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

int cfz_set_current_thread_name(const char *name) { return pthread_setname_np(pthread_self(), name); }

const int CFZ_SOL_SOCKET = SOL_SOCKET;
const int CFZ_SO_REUSEPORT = SO_REUSEPORT;
const int CFZ_SO_RCVBUF = SO_RCVBUF;
const int CFZ_SO_SNDBUF = SO_SNDBUF;
const int CFZ_SO_RCVBUFFORCE = SO_RCVBUFFORCE;
const int CFZ_SO_SNDBUFFORCE = SO_SNDBUFFORCE;
const int CFZ_IPPROTO_IPV6 = IPPROTO_IPV6;
const int CFZ_IPV6_V6ONLY = IPV6_V6ONLY;
const int CFZ_IPPROTO_IP = IPPROTO_IP;
const int CFZ_IP_MTU_DISCOVER = IP_MTU_DISCOVER;
const int CFZ_IP_PMTUDISC_DO = IP_PMTUDISC_DO;
const int CFZ_IPV6_MTU_DISCOVER = IPV6_MTU_DISCOVER;
const int CFZ_IPV6_PMTUDISC_DO = IPV6_PMTUDISC_DO;
const int CFZ_IPPROTO_UDP = IPPROTO_UDP;
const int CFZ_SOL_UDP = SOL_UDP;
const int CFZ_UDP_SEGMENT = UDP_SEGMENT;
const int CFZ_UDP_GRO = UDP_GRO;
const int CFZ_MSG_TRUNC = MSG_TRUNC;
const int CFZ_MSG_CTRUNC = MSG_CTRUNC;
const int CFZ_SOCK_DGRAM = SOCK_DGRAM;
const int CFZ_SOCK_STREAM = SOCK_STREAM;
const int CFZ_IPPROTO_TCP = IPPROTO_TCP;
const int CFZ_TCP_NODELAY = TCP_NODELAY;
const int CFZ_SO_REUSEADDR = SO_REUSEADDR;
const int CFZ_MSG_NOSIGNAL = MSG_NOSIGNAL;

int cfz_accept4(int fd, struct sockaddr *addr, socklen_t *len) {
    return accept4(fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}
const int CFZ_SOCK_NONBLOCK = SOCK_NONBLOCK;
const int CFZ_SOCK_CLOEXEC = SOCK_CLOEXEC;

// Probes on a throwaway IPv4 UDP socket, as swift-nio's CNIOLinux does. Any failure (including
// socket() itself) answers "unsupported"; errno is preserved for the caller.
static bool supports_udp_sockopt(int opt, int value) {
    int saved = errno;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_UDP);
    if (fd < 0) {
        errno = saved;
        return false;
    }
    int rc = setsockopt(fd, SOL_UDP, opt, &value, sizeof(value));
    close(fd);
    errno = saved;
    return rc == 0;
}

bool cfz_supports_udp_segment(void) { return supports_udp_sockopt(UDP_SEGMENT, 512); }

bool cfz_supports_udp_gro(void) { return supports_udp_sockopt(UDP_GRO, 1); }

#endif  // __linux__

int cfz_unshare_network_namespace(void) { return unshare(CLONE_NEWNET); }
