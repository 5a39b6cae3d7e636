"""A minimal STUN Binding server (RFC 3489/5389) for the port-mapping test's lab.

  stund.py IP_A IP_B      answer on IP_A and IP_B, ports 3478 and 3479, until killed

miniupnpd refuses to forward while its WAN address is private, unless a STUN server
(`ext_perform_stun=yes`) shows it is behind an unrestricted NAT: it sends Binding
requests with CHANGE-REQUEST and expects answers from the other address and port.
This server honours CHANGE-REQUEST across its two addresses and two ports. It runs in
the test's own "outside" network namespace only. Prints "listening" once bound.
"""
import select
import socket
import struct
import sys

MAGIC = 0x2112A442


def addr_attr(kind, ip, port, xor=0):
    packed = struct.unpack("!I", socket.inet_aton(ip))[0]
    return struct.pack("!HHBBHI", kind, 8, 0, 1, port ^ (xor >> 16), packed ^ xor)


def change_request(msg):
    off, flags = 20, 0
    while off + 4 <= len(msg):
        kind, length = struct.unpack("!HH", msg[off:off + 4])
        if kind == 3 and length == 4 and off + 8 <= len(msg):
            flags = msg[off + 7]
        off += 4 + length + (-length % 4)
    return flags


def main(ip_a, ip_b, port_a=3478, port_b=3479):
    socks = {}
    for ip in (ip_a, ip_b):
        for port in (port_a, port_b):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((ip, port))
            socks[(ip, port)] = s
    print("listening", flush=True)
    while True:
        for s in select.select(list(socks.values()), [], [])[0]:
            msg, (cip, cport) = s.recvfrom(2048)
            if len(msg) < 20 or msg[:2] != b"\x00\x01":
                continue
            flags = change_request(msg)
            lip, lport = s.getsockname()
            oip = ip_b if lip == ip_a else ip_a
            oport = port_b if lport == port_a else port_a
            rip = oip if flags & 4 else lip
            rport = oport if flags & 2 else lport
            body = (addr_attr(1, cip, cport) + addr_attr(0x20, cip, cport, MAGIC)
                    + addr_attr(4, rip, rport) + addr_attr(5, oip, oport))
            reply = struct.pack("!HH", 0x0101, len(body)) + msg[4:20] + body
            socks[(rip, rport)].sendto(reply, (cip, cport))


if __name__ == "__main__":
    main(*sys.argv[1:3])
