"""libtorrent as a reference tool for btfs tests (Debian python3-libtorrent, /usr/bin/python3).

  lt.py make v1|hybrid|v2 DATA OUT [PIECE_LENGTH]   create a torrent with libtorrent
  lt.py info TORRENT                                print {"v1","v2","files":[[path,size,pad]]}
  lt.py check TORRENT SAVE_PATH [TIMEOUT]           hash-check existing data, print
                                                    {"pieces","have","seeding"}
  lt.py seed TORRENT SAVE_PATH PORT [RATE]          seed on 127.0.0.1:PORT, announcing to
                                                    the torrent's trackers, until killed;
                                                    prints "seeding" once it seeds; RATE
                                                    limits upload in bytes/s
  lt.py magnet URI SAVE_PATH PORT PEER [TIMEOUT]     like leech, from a magnet link: the
                                                    metadata comes from PEER too
  lt.py leech TORRENT SAVE_PATH PORT PEER [TIMEOUT] download from PEER (IP:PORT) only, or
                                                    with PEER "-" from the torrent's web
                                                    seeds; prints "done" when complete

Every session binds 127.0.0.1 only (or the loopback address the environment variable
LT_IP names, such as 127.0.0.2, for listening and dialling; LT_LISTEN, such as [::1],
overrides where it listens), with LSD, UPnP and NAT-PMP
off, and DHT off unless the environment variable LT_DHT names a bootstrap node
(HOST:PORT) on 127.0.0.1.

  lt.py dht-node PORT                               a DHT-only node on 127.0.0.1:PORT
"""
import json
import os
import sys
import time

import libtorrent as lt


def make(mode, data, out, piece_length=0):
    fs = lt.file_storage()
    lt.add_files(fs, data)
    flags = {"v1": lt.create_torrent.v1_only, "hybrid": 0, "v2": lt.create_torrent.v2_only}[mode]
    ct = lt.create_torrent(fs, int(piece_length), flags=flags)
    ct.set_creator("libtorrent test")
    lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(data)))
    with open(out, "wb") as f:
        f.write(lt.bencode(ct.generate()))


def info(path):
    ti = lt.torrent_info(path)
    ih = ti.info_hashes()
    fs = ti.files()
    files = []
    for i in range(fs.num_files()):
        pad = bool(fs.file_flags(i) & lt.file_storage.flag_pad_file)
        files.append([fs.file_path(i), fs.file_size(i), pad])
    v1 = str(ih.v1) if ih.has_v1() else None
    v2 = str(ih.v2) if ih.has_v2() else None
    print(json.dumps({"v1": v1, "v2": v2, "files": files, "pieces": ti.num_pieces()}))


def session(port=0, dht=None):
    dht = dht if dht is not None else os.environ.get("LT_DHT", "")
    # LT_LISTEN: the address to listen on, e.g. "[::1]" for IPv6 only; LT_IP: a
    # loopback address such as 127.0.0.2 to listen on and dial from.
    ip = os.environ.get("LT_IP", "127.0.0.1")
    host = os.environ.get("LT_LISTEN", ip)
    settings = {
        "listen_interfaces": "%s:%d" % (host, int(port)),
        "allow_multiple_connections_per_ip": True,
        # btfs speaks TCP only; without this libtorrent tries uTP first.
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "announce_to_all_trackers": True,
        "announce_to_all_tiers": True,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "alert_mask": lt.alert.category_t.status_notification,
    }
    if "LT_IP" in os.environ:
        settings["outgoing_interfaces"] = ip
    if dht:
        settings.update({
            "enable_dht": True,
            "dht_bootstrap_nodes": dht if dht != "-" else "",
            "dht_restrict_routing_ips": False,
            "dht_restrict_search_ips": False,
            "dht_ignore_dark_internet": False,
            "dht_prefer_verified_node_ids": False,
            "dht_announce_interval": 2,
        })
    return lt.session(settings)


def check(path, save_path, timeout=60):
    s = session()
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(path)
    params.save_path = save_path
    h = s.add_torrent(params)
    # Done when libtorrent seeds (every piece verified) or the time is up; a torrent
    # whose hashes do not match the data never seeds, so the caller sees have < pieces.
    deadline = time.time() + float(timeout)
    while time.time() < deadline and not h.status().is_seeding:
        time.sleep(0.05)
    st = h.status()
    print(json.dumps({"pieces": params.ti.num_pieces(), "have": st.num_pieces,
                      "seeding": st.is_seeding, "state": str(st.state)}))


def seed(path, save_path, port, rate=0):
    s = session(port)
    if int(rate):
        # Peers on 127.0.0.1 are in the unlimited local peer class: limit that class.
        s.set_peer_class(lt.session.local_peer_class_id, {"upload_limit": int(rate), "label": "local"})
        s.apply_settings({"upload_rate_limit": int(rate)})
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(path)
    params.save_path = save_path
    h = s.add_torrent(params)
    while not h.status().is_seeding:
        time.sleep(0.05)
    h.force_reannounce()
    print("seeding", flush=True)
    while True:
        time.sleep(1)


def magnet(uri, save_path, port, peer, timeout=120):
    params = lt.parse_magnet_uri(uri)
    leech(None, save_path, port, peer, timeout, params)


def leech(path, save_path, port, peer, timeout=120, params=None):
    s = session(port)
    if params is None:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(path)
    params.save_path = save_path
    h = s.add_torrent(params)
    host, p = peer.rsplit(":", 1) if peer != "-" else ("", "0")
    deadline = time.time() + float(timeout)
    last_connect = 0
    while time.time() < deadline and not h.status().is_seeding:
        if peer != "-" and time.time() - last_connect > 2 and h.status().num_peers == 0:
            h.connect_peer((host.strip("[]"), int(p)))
            last_connect = time.time()
        time.sleep(0.05)
    st = h.status()
    print("done" if st.is_seeding else "incomplete %d pieces" % st.num_pieces, flush=True)


def dht_node(port):
    s = session(port, dht="-")
    print("dht node", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"make": make, "info": info, "check": check, "seed": seed, "leech": leech, "magnet": magnet, "dht-node": dht_node}[cmd](*args)
