#ifndef CFZLINUX_H
#define CFZLINUX_H

// Linux system interfaces that Swift's Glibc module does not export (or exports awkwardly):
// recvmmsg/sendmmsg and struct mmsghdr (declared only under _GNU_SOURCE, which the Glibc module is not
// built with), epoll, eventfd, a few socket option numbers, and CMSG accessors (macros Swift cannot call).
//
// Only FZLinux imports this module; everything here is wrapped once there. The `.c` file defines
// _GNU_SOURCE and checks at compile time that the layouts below match glibc's.

#ifdef __linux__

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include "CFZTun.h"

/// Layout-identical copy of glibc's `struct mmsghdr` (see sys/socket.h under _GNU_SOURCE).
///
/// Swift cannot see the real declaration, so the Swift side builds arrays of this struct and the C
/// wrappers cast them to `struct mmsghdr *`. The cast is sound because glibc's ABI fixes the layout
/// (a `struct msghdr` followed by an `unsigned int`); shim.c asserts size and offsets with
/// _Static_assert so a mismatch fails the build instead of corrupting memory.
struct cfz_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};

/// recvmmsg(2) with no timeout. `vec` must point to `vlen` initialised headers whose msg_name,
/// msg_iov and msg_control pointers stay valid for the duration of the call.
/// Returns the number of datagrams received, or -1 with errno set.
int cfz_recvmmsg(int fd, struct cfz_mmsghdr *vec, unsigned int vlen, int flags);

/// sendmmsg(2). Returns the number of datagrams sent (possibly fewer than `vlen`; the first unsent one
/// failed and a repeated call reports its error), or -1 with errno set when the first one fails.
int cfz_sendmmsg(int fd, struct cfz_mmsghdr *vec, unsigned int vlen, int flags);

// MARK: epoll
//
// `struct epoll_event` is `__attribute__((packed))` on x86_64 (12 bytes, the u64 at offset 4), which
// Swift cannot express safely. The Swift side therefore never touches the struct: it owns an opaque
// buffer of `cfz_epoll_event_size() * n` bytes and reads it through the accessors below.

/// epoll_create1(EPOLL_CLOEXEC).
int cfz_epoll_create(void);
/// epoll_ctl with the event built here. `op` is one of CFZ_EPOLL_CTL_*.
int cfz_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
/// epoll_wait into `events` (at least `maxevents * cfz_epoll_event_size()` bytes).
int cfz_epoll_wait(int epfd, void *events, int maxevents, int timeout_ms);
/// sizeof(struct epoll_event).
size_t cfz_epoll_event_size(void);
/// The `events` mask of the i-th entry of a buffer filled by cfz_epoll_wait.
uint32_t cfz_epoll_event_mask(const void *events, int i);
/// The `data.u64` of the i-th entry of a buffer filled by cfz_epoll_wait.
uint64_t cfz_epoll_event_data(const void *events, int i);

extern const int CFZ_EPOLL_CTL_ADD;
extern const int CFZ_EPOLL_CTL_MOD;
extern const int CFZ_EPOLL_CTL_DEL;
extern const uint32_t CFZ_EPOLLIN;
extern const uint32_t CFZ_EPOLLOUT;
extern const uint32_t CFZ_EPOLLERR;
extern const uint32_t CFZ_EPOLLHUP;
extern const uint32_t CFZ_EPOLLRDHUP;

// MARK: eventfd

/// eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK): the cross-thread wakeup of an event loop.
int cfz_eventfd_create(void);

// MARK: threads

/// pthread_setname_np(pthread_self(), name); Linux truncates nothing itself but rejects names longer
/// than 15 bytes, so the caller passes at most 15.
int cfz_set_current_thread_name(const char *name);

// MARK: socket constants
//
// Some of these are missing from older headers; the fallbacks are the Linux UAPI numbers, which never
// change once released.

extern const int CFZ_SOL_SOCKET;
extern const int CFZ_SO_REUSEPORT;
extern const int CFZ_SO_RCVBUF;
extern const int CFZ_SO_SNDBUF;
extern const int CFZ_SO_RCVBUFFORCE;
extern const int CFZ_SO_SNDBUFFORCE;
extern const int CFZ_IPPROTO_IPV6;
extern const int CFZ_IPV6_V6ONLY;
/* Path MTU discovery: IP_PMTUDISC_DO sets DF on every datagram (TURN DONT-FRAGMENT, RFC 8656 §7.2). */
extern const int CFZ_IPPROTO_IP;
extern const int CFZ_IP_MTU_DISCOVER;
extern const int CFZ_IP_PMTUDISC_DO;
extern const int CFZ_IPV6_MTU_DISCOVER;
extern const int CFZ_IPV6_PMTUDISC_DO;
extern const int CFZ_IPPROTO_UDP;
extern const int CFZ_SOL_UDP;
/// UDP_SEGMENT (GSO, Linux 4.18): setsockopt/cmsg value is the segment size as uint16_t.
extern const int CFZ_UDP_SEGMENT;
/// UDP_GRO (Linux 5.0): setsockopt int; received cmsg carries the segment size as int.
extern const int CFZ_UDP_GRO;
extern const int CFZ_MSG_TRUNC;
extern const int CFZ_MSG_CTRUNC;
extern const int CFZ_SOCK_DGRAM;
extern const int CFZ_SOCK_STREAM;
extern const int CFZ_IPPROTO_TCP;
extern const int CFZ_TCP_NODELAY;
extern const int CFZ_SO_REUSEADDR;
/// send(2) flag: a write to a connection the peer reset fails with EPIPE instead of raising SIGPIPE.
extern const int CFZ_MSG_NOSIGNAL;

/// accept4(fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC) (accept4 is declared only under _GNU_SOURCE).
int cfz_accept4(int fd, struct sockaddr *addr, socklen_t *len);
extern const int CFZ_SOCK_NONBLOCK;
extern const int CFZ_SOCK_CLOEXEC;

/// unshare(CLONE_NEWNET) for the calling thread only (declared only under _GNU_SOURCE): 0 or -1
/// with errno. Sockets and TUN devices opened afterwards on this thread live in the new namespace.
int cfz_unshare_network_namespace(void);

/// Whether the kernel accepts setsockopt(SOL_UDP, UDP_SEGMENT) on a fresh UDP socket.
bool cfz_supports_udp_segment(void);
/// Whether the kernel accepts setsockopt(SOL_UDP, UDP_GRO) on a fresh UDP socket.
bool cfz_supports_udp_gro(void);

// MARK: control messages
//
// CMSG_* are macros. These wrappers exist for the GSO/GRO paths: the caller owns a control buffer of
// CMSG_SPACE(n) bytes per message, aligned for `struct cmsghdr`, and points msg_control at it.

static inline struct cmsghdr *cfz_cmsg_firsthdr(const struct msghdr *m) { return CMSG_FIRSTHDR(m); }
static inline struct cmsghdr *cfz_cmsg_nxthdr(struct msghdr *m, struct cmsghdr *c) { return CMSG_NXTHDR(m, c); }
static inline void *cfz_cmsg_data(struct cmsghdr *c) { return CMSG_DATA(c); }
static inline size_t cfz_cmsg_len(size_t payload) { return CMSG_LEN(payload); }
static inline size_t cfz_cmsg_space(size_t payload) { return CMSG_SPACE(payload); }

#endif  // __linux__
#endif  // CFZLINUX_H
