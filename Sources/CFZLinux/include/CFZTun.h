#ifndef CFZTUN_H
#define CFZTUN_H

// TUN devices, rtnetlink sockets and signal masks: the parts of <linux/if_tun.h>, <linux/netlink.h>
// and <net/if.h> Swift cannot use directly (`struct ifreq` is a union, TUNSETIFF a macro computed
// by _IOW, sockaddr_nl absent from the Glibc module). Wrapped once in FZLinux (Tun.swift,
// Netlink.swift, SignalWaiter.swift); the netlink message layouts themselves are encoded in Swift.

#ifdef __linux__

#include <stdint.h>
#include <sys/types.h>

/// IFNAMSIZ: interface names are at most 15 bytes plus the terminating NUL.
extern const int CFZ_IFNAMSIZ;

/// Attaches the freshly opened `/dev/net/tun` descriptor `fd` to the interface `name` (created when
/// missing) with IFF_TUN | IFF_NO_PI: every read and write is one bare IP packet. The kernel's
/// name for the interface (it expands a `%d` pattern) is copied to `out_name`, which holds
/// CFZ_IFNAMSIZ bytes. Returns 0, or -1 with errno set.
int cfz_tun_attach(int fd, const char *name, char *out_name);

/// As `cfz_tun_attach`, with IFF_VNET_HDR added when `vnet_hdr` is non-zero: every read and
/// write then starts with a 10-byte `struct virtio_net_hdr` (GSO type and size, checksum offload).
int cfz_tun_attach_flags(int fd, const char *name, char *out_name, int vnet_hdr);

/// TUNSETOFFLOAD on a descriptor attached with IFF_VNET_HDR: TUN_F_CSUM, plus TUN_F_TSO4 |
/// TUN_F_TSO6 when `tso` is non-zero. The kernel then hands over TCP segments of up to 64 KiB
/// with partial checksums, described by the virtio header. Returns 0, or -1 with errno set.
int cfz_tun_set_offload(int fd, int tso);

/// writev(fd, {header, packet}): one TUN write of a virtio header and the packet behind it, without
/// copying them together. Returns the bytes written or -1 with errno set.
ssize_t cfz_tun_write2(int fd, const void *header, size_t header_length, const void *packet, size_t packet_length);

/// open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC). Returns the descriptor or -1 with errno.
int cfz_tun_open_clone_device(void);

/// socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE) bound to an address the kernel picks.
/// Returns the descriptor or -1 with errno set.
int cfz_netlink_route_open(void);

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (threads created later inherit the
/// mask), so that `cfz_wait_termination_signal` can take them synchronously. Returns 0 or an errno.
int cfz_block_termination_signals(void);

/// sigwait(3) for one of the signals blocked above: the signal number, or the negated error number
/// (sigwait returns an error instead of setting errno).
int cfz_wait_termination_signal(void);

#endif  // __linux__
#endif  // CFZTUN_H
