"""Stand-in services for the firewall scenario: each TCP port answers "ok <port>" and
closes, each UDP port echoes "ok <port>" back, so a test tells an open port (answer) from
a refused one (RST / ICMP unreachable) and a dropped one (silence).
    fw_listeners.py --tcp 443,8000 --udp 5353,5354
"""

import argparse
import socket
import threading


def serve_tcp(port):
    server = socket.create_server(("0.0.0.0", port), backlog=64)
    while True:
        conn, _ = server.accept()
        with conn:
            conn.sendall(f"ok {port}\n".encode())


def serve_udp(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    while True:
        _, peer = sock.recvfrom(512)
        sock.sendto(f"ok {port}\n".encode(), peer)


def ports(text):
    return [int(p) for p in text.split(",") if p]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tcp", type=ports, default=[])
    parser.add_argument("--udp", type=ports, default=[])
    args = parser.parse_args()
    threads = [threading.Thread(target=serve_tcp, args=(p,)) for p in args.tcp]
    threads += [threading.Thread(target=serve_udp, args=(p,)) for p in args.udp]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
