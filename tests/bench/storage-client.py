"""Storage's 1 MB figures without a process per request: one Python process
uploads COUNT copies of FILE over one keep-alive connection, downloads them
back into files, and copies FILE COUNT times itself (with and without
fsync), so the ratios compare the proxy with a copy made by the same
program. Prints `up down cp cp_fsync` in MB/s.

usage: storage-client.py PORT TOKEN FILE COUNT OUTDIR TAG
"""
import http.client
import os
import shutil
import sys
import time

port, token, src, count, outdir, tag = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
size = os.path.getsize(src)
conn = http.client.HTTPConnection("127.0.0.1", int(port), blocksize=1 << 20)
auth = {"apikey": token, "Authorization": "Bearer " + token}


def mbps(start):
    return size * count / 1048576 / (time.perf_counter() - start)


def timed(body):
    start = time.perf_counter()
    for i in range(count):
        body(i)
    return mbps(start)


def upload(i):
    with open(src, "rb") as f:
        headers = dict(auth, **{"content-type": "application/octet-stream", "x-upsert": "true",
                                "content-length": str(size)})
        conn.request("POST", f"/storage/v1/object/bench/py-{tag}-{i}", body=f, headers=headers)
        r = conn.getresponse()
        r.read()
        assert r.status == 200, (r.status, r.reason)


def download(i):
    conn.request("GET", f"/storage/v1/object/public/bench/py-{tag}-{i}")
    r = conn.getresponse()
    assert r.status == 200, (r.status, r.reason)
    with open(os.path.join(outdir, f"down-{i}"), "wb") as out:
        shutil.copyfileobj(r, out, 1 << 20)


def copy(i, fsync=False):
    with open(src, "rb") as f, open(os.path.join(outdir, f"copy-{i}"), "wb") as out:
        shutil.copyfileobj(f, out, 1 << 20)
        if fsync:
            out.flush()
            os.fsync(out.fileno())


def clean():
    for name in os.listdir(outdir):
        os.remove(os.path.join(outdir, name))


up = timed(upload)
down = timed(download)
clean()
cp = timed(copy)
clean()
cp_fsync = timed(lambda i: copy(i, True))
clean()
print(f"{up:.1f} {down:.1f} {cp:.1f} {cp_fsync:.1f}")
