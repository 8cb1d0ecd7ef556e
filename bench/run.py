#!/usr/bin/python3
"""hexz benchmarks, side by side with the tools users would pick instead.

Run through bench/run.sh, which installs the peers and builds hexz. Every
comparison runs in this one process, on the same data, on the same machine,
and is reported as a ratio against the peer. Figures are medians of --runs
runs; the "noise" column is (max - min) / median over those runs.
"""

import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

MiB = 1 << 20
# The zstd level of every zstd pack in the bench, hexz's and its peers' alike
# (3 is hexz's default).
ZSTD_LEVEL = 3
# The peak RSS goal of `hexz pack` and of a worker without a cache.
RSS_GOAL_MIB = 64


class Bench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.hexz = os.path.join(self.build, "hexz", "hexz")
        self.work = os.path.abspath(args.work)
        os.makedirs(self.work, exist_ok=True)
        self.rows = []  # dicts: section, name, value, unit, noise, peer, ratio, note
        self.cleanups = []
        self.env = dict(os.environ)
        self.env["HEXZ_FUSED"] = os.path.join(self.build, "hexz-fused", "hexz-fused")

    # ---------------------------------------------------------------- helpers
    def sh(self, cmd, check=True, **kw):
        kw.setdefault("env", self.env)
        return subprocess.run(cmd, check=check, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, **kw)

    def sh_durable(self, cmd, out):
        """Runs cmd, then fsyncs its output `out` unless hexz wrote it (hexz
        fsyncs its own outputs): every tool's output ends durable."""
        self.sh(cmd)
        if os.path.basename(cmd[0]) != "hexz":
            fd = os.open(out, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def path(self, name):
        return os.path.join(self.work, name)

    @staticmethod
    def drop_caches():
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")

    def timed(self, fn, runs=None, prepare=None):
        """Runs fn() `runs` times (prepare() before each, untimed); returns
        (median seconds, noise)."""
        runs = runs or self.args.runs
        times = []
        for _ in range(runs):
            if prepare:
                prepare()
            t0 = time.monotonic()
            fn()
            times.append(time.monotonic() - t0)
        med = statistics.median(times)
        noise = (max(times) - min(times)) / med if med > 0 else 0.0
        return med, noise

    @staticmethod
    def noise(values):
        """(max - min) / median of `values`."""
        med = statistics.median(values)
        return (max(values) - min(values)) / med if med > 0 else 0.0

    def record(self, section, name, value, unit, noise=None, peer=None,
               ratio=None, note=""):
        row = dict(section=section, name=name, value=value, unit=unit,
                   noise=noise, peer=peer, ratio=ratio, note=note)
        self.rows.append(row)
        r = f" ratio {ratio:.2f}x vs {peer}" if ratio is not None else ""
        print(f"[{section}] {name}: {value:.1f} {unit}{r} {note}", flush=True)

    def fail(self, section, name, err):
        self.rows.append(dict(section=section, name=name, value=None, unit="",
                              noise=None, peer=None, ratio=None,
                              note=f"failed: {err}"))
        print(f"[{section}] {name}: FAILED: {err}", flush=True)

    def wait_file(self, path, timeout=20):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if os.path.exists(path):
                return True
            time.sleep(0.005)  # fine-grained: QEMU's start is timed through it
        return False

    def unmount(self, mnt):
        subprocess.run(["fusermount3", "-u", mnt], stderr=subprocess.DEVNULL)
        subprocess.run(["umount", "-l", mnt], stderr=subprocess.DEVNULL)

    def spawn(self, cmd):
        p = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
        self.cleanups.append(lambda: self.kill(p))
        return p

    @staticmethod
    def kill(p):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(10)
            except Exception:
                os.killpg(p.pid, signal.SIGKILL)

    def mib_per_s(self, nbytes, seconds):
        return nbytes / MiB / seconds if seconds > 0 else 0.0

    # ------------------------------------------------------------------ data
    def prepare_data(self):
        q = self.args.quick
        src = "/usr/share/doc" if q else "/usr/share"
        img = self.path("real.img")
        if not os.path.exists(img):
            used = int(self.sh(["du", "-sb", src]).stdout.split()[0])
            size = max(64 * MiB, int(used * 1.35) // MiB * MiB)
            self.sh(["truncate", "-s", str(size), img])
            self.sh(["mkfs.ext4", "-q", "-F", "-d", src, img])
        self.images = {"real": img}
        n = (32 if q else 256) * MiB
        rnd = self.path("random.img")
        if not os.path.exists(rnd):
            with open(rnd, "wb") as f:
                f.write(os.urandom(n))
        zero = self.path("zeros.img")
        if not os.path.exists(zero):
            self.sh(["truncate", "-s", str(n), zero])
        rep = self.path("repeat.img")
        if not os.path.exists(rep):
            chunk = os.urandom(64 * 1024)
            with open(rep, "wb") as f:
                for _ in range(n // len(chunk)):
                    f.write(chunk)
        mem = self.path("memory.img")
        if not os.path.exists(mem):
            rng = random.Random(1)
            with open(mem, "wb") as f:
                f.truncate(n)
                for _ in range(n // (4096 * 50)):  # ~2% of pages populated
                    f.seek(rng.randrange(n // 4096) * 4096)
                    f.write(os.urandom(2048) + bytes(2048))
        self.images.update(random=rnd, zeros=zero, repeat=rep, memory=mem)
        self.real_size = os.path.getsize(img)
        print(f"data: real image {self.real_size // MiB} MiB from {src}; "
              f"synthetic {n // MiB} MiB each", flush=True)

    # ------------------------------------------------------------------ pack
    def bench_pack(self):
        img = self.images["real"]
        size = self.real_size
        outs = {}

        def rm(p):
            return lambda: os.path.exists(p) and os.remove(p)

        tools = [
            ("hexz pack lz4", self.path("real-lz4.st"),
             lambda o: [self.hexz, "pack", "--disk", img, "--output", o,
                        "--compression", "lz4", "--quiet"]),
            (f"hexz pack zstd (level {ZSTD_LEVEL})", self.path("real-zstd.st"),
             lambda o: [self.hexz, "pack", "--disk", img, "--output", o,
                        "--compression", "zstd", "--level", str(ZSTD_LEVEL),
                        "--quiet"]),
            ("qemu-img qcow2 zstd", self.path("real.qcow2"),
             lambda o: ["qemu-img", "convert", "-c", "-O", "qcow2", "-o",
                        "compression_type=zstd", img, o]),
            ("mksquashfs lz4", self.path("real-lz4.sqfs"),
             lambda o: ["mksquashfs", img, o, "-comp", "lz4", "-noappend",
                        "-no-progress", "-quiet"]),
            # The same zstd level and block size as hexz (mksquashfs would
            # otherwise use level 15 and 128 KiB blocks).
            (f"mksquashfs zstd (level {ZSTD_LEVEL}, 64 KiB)", self.path("real-zstd.sqfs"),
             lambda o: ["mksquashfs", img, o, "-comp", "zstd", "-Xcompression-level",
                        str(ZSTD_LEVEL), "-b", "65536", "-noappend",
                        "-no-progress", "-quiet"]),
            ("lz4 (raw stream)", self.path("real.img.lz4"),
             lambda o: ["lz4", "-q", "-f", img, o]),
            ("zstd -T0 (raw stream)", self.path("real.img.zst"),
             lambda o: ["zstd", "-q", "-f", "-T0", f"-{ZSTD_LEVEL}", img, "-o", o]),
        ]
        results = {}
        for name, out, cmd in tools:
            try:
                # Every output is made durable inside the timing, as hexz pack
                # does itself (fsync before its rename); the page cache is
                # written back before each run, so no run pays for the last.
                med, noise = self.timed(lambda: self.sh_durable(cmd(out), out),
                                        prepare=lambda: (rm(out)(), os.sync()))
                results[name] = (med, noise, os.path.getsize(out))
                outs[name] = out
            except Exception as e:  # a peer's failure is reported, not fatal
                self.fail("pack", name, getattr(e, "stderr", "") or e)
        peers_for = {
            "hexz pack lz4": ["mksquashfs lz4", "lz4 (raw stream)"],
            f"hexz pack zstd (level {ZSTD_LEVEL})": [
                "qemu-img qcow2 zstd", f"mksquashfs zstd (level {ZSTD_LEVEL}, 64 KiB)",
                "zstd -T0 (raw stream)"],
        }
        for name, (med, noise, osize) in results.items():
            note = (f"time {med:.2f}s size {osize / MiB:.1f} MiB "
                    f"({100.0 * osize / size:.1f}% of input)")
            peers = [p for p in peers_for.get(name, []) if p in results]
            if not peers:
                self.record("pack", name, self.mib_per_s(size, med), "MiB/s", noise,
                            note=note)
            for peer in peers:
                self.record("pack", name, self.mib_per_s(size, med), "MiB/s", noise,
                            peer, results[peer][0] / med,
                            f"{note}; size {osize / results[peer][2]:.3f}x the peer's")
        self.outputs = outs

    def bench_synthetic(self):
        """Pack of the synthetic mixes and the memory-like stream: time and
        size against lz4 / zstd -T0 on the raw bytes."""
        for kind in ("random", "zeros", "repeat", "memory"):
            src = self.images[kind]
            size = os.path.getsize(src)
            out = self.path(f"{kind}.st")
            disk = ["--disk", src] if kind != "memory" else ["--disk", self.images["zeros"], "--memory", src]
            tools = [
                ("hexz pack lz4", out, [self.hexz, "pack", *disk, "--output", out, "--quiet"]),
                ("hexz pack zstd", out, [self.hexz, "pack", *disk, "--output", out,
                                         "--compression", "zstd", "--quiet"]),
                ("zstd -T0", self.path(f"{kind}.zst"),
                 ["zstd", "-q", "-f", "-T0", src, "-o", self.path(f"{kind}.zst")]),
                ("lz4", self.path(f"{kind}.lz4"), ["lz4", "-q", "-f", src, self.path(f"{kind}.lz4")]),
            ]
            res = {}
            for name, o, cmd in tools:
                try:
                    med, noise = self.timed(lambda: self.sh_durable(cmd, o), prepare=os.sync)
                    res[name] = (med, noise, os.path.getsize(o))
                except Exception as e:
                    self.fail("pack-synthetic", f"{kind}: {name}", getattr(e, "stderr", "") or e)
            for name, (med, noise, osize) in res.items():
                peer = ("zstd -T0" if "zstd" in name else "lz4") if name.startswith("hexz") else None
                ratio = res[peer][0] / med if peer in res else None
                self.record("pack-synthetic", f"{kind}: {name}", self.mib_per_s(size, med),
                            "MiB/s", noise, peer if ratio else None, ratio,
                            f"size {osize / MiB:.2f} MiB of {size / MiB:.0f} MiB")

    # ------------------------------------------------------------ FUSE reads
    def mount_hexz(self, snap, mnt, extra=()):
        os.makedirs(mnt, exist_ok=True)
        self.sh([self.hexz, "mount", snap, mnt, "--daemon", *extra])
        self.cleanups.append(lambda: self.sh([self.hexz, "unmount", mnt], check=False))
        return os.path.join(mnt, "disk")

    def mount_squashfuse(self, sqfs, mnt):
        os.makedirs(mnt, exist_ok=True)
        self.sh(["squashfuse_ll", sqfs, mnt])
        self.cleanups.append(lambda: self.unmount(mnt))
        return os.path.join(mnt, "real.img")

    def serve_unix(self, name, cmd_for_sock):
        """Starts a server on a fresh unix socket; returns it once it accepts."""
        import socket as socketlib
        sock = self.path(name)
        if os.path.exists(sock):
            os.remove(sock)
        self.spawn(cmd_for_sock(sock))
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                with socketlib.socket(socketlib.AF_UNIX) as c:
                    c.connect(sock)
                return sock
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{name}: the server did not start")

    def qemu_nbd(self):
        """One qemu-nbd for every qcow2 reader (qemu locks the image)."""
        if not getattr(self, "_qemu_sock", None):
            qcow2 = self.outputs["qemu-img qcow2 zstd"]
            self._qemu_sock = self.serve_unix(
                "qemu-nbd.sock",
                lambda s: ["qemu-nbd", "-r", "-f", "qcow2", "-k", s, "-e", "16", qcow2])
        return self._qemu_sock

    def mount_nbdfuse(self, qcow2, mnt):
        os.makedirs(mnt, exist_ok=True)
        sock = self.qemu_nbd()
        self.spawn(["nbdfuse", "-r", mnt, "--unix", sock])
        target = os.path.join(mnt, "nbd")
        self.wait_file(target)
        self.cleanups.append(lambda: self.unmount(mnt))
        return target

    def seq_read(self, path):
        def run():
            self.sh(["dd", f"if={path}", "of=/dev/null", "bs=1M"])
        return self.timed(run, prepare=self.drop_caches)

    def fio(self, path, jobs):
        out = self.sh(["fio", "--name=rand", f"--filename={path}", "--readonly",
                       "--rw=randread", "--bs=4k", "--ioengine=psync",
                       f"--numjobs={jobs}", "--time_based",
                       f"--runtime={3 if self.args.quick else 15}",
                       "--group_reporting", "--invalidate=1",
                       "--output-format=json"]).stdout
        return json.loads(out)["jobs"][0]["read"]["iops"]

    def bench_fuse(self):
        mounts = {}
        try:
            mounts["hexz"] = self.mount_hexz(self.outputs["hexz pack lz4"],
                                             self.path("mnt-hexz"))
        except Exception as e:
            self.fail("fuse", "hexz mount", getattr(e, "stderr", "") or e)
        try:
            mounts["hexz --cache-size 1G"] = self.mount_hexz(
                self.outputs["hexz pack lz4"], self.path("mnt-hexz-cache"),
                ["--cache-size", "1G"])
        except Exception as e:
            self.fail("fuse", "hexz mount --cache-size", getattr(e, "stderr", "") or e)
        try:
            mounts["squashfuse_ll"] = self.mount_squashfuse(
                self.outputs["mksquashfs lz4"], self.path("mnt-sqfs"))
        except Exception as e:
            self.fail("fuse", "squashfuse_ll", getattr(e, "stderr", "") or e)
        try:
            mounts["nbdfuse+qemu-nbd"] = self.mount_nbdfuse(
                self.outputs["qemu-img qcow2 zstd"], self.path("mnt-nbdfuse"))
        except Exception as e:
            self.fail("fuse", "nbdfuse", getattr(e, "stderr", "") or e)

        seq = {}
        for name, path in mounts.items():
            try:
                if "cache" in name:  # warm the shared cache once, untimed
                    self.sh(["dd", f"if={path}", "of=/dev/null", "bs=1M"])
                seq[name] = self.seq_read(path)
            except Exception as e:
                self.fail("seq-read", name, getattr(e, "stderr", "") or e)
        for name, (med, noise) in seq.items():
            peer = "squashfuse_ll" if name.startswith("hexz") else None
            ratio = seq[peer][0] / med if peer in seq else None
            self.record("seq-read", name, self.mib_per_s(self.real_size, med),
                        "MiB/s", noise, peer if ratio else None, ratio)
            if name.startswith("hexz") and "nbdfuse+qemu-nbd" in seq:
                self.record("seq-read", name, self.mib_per_s(self.real_size, med),
                            "MiB/s", noise, "nbdfuse+qemu-nbd",
                            seq["nbdfuse+qemu-nbd"][0] / med)
        for jobs in (1, 4):
            iops = {}
            for name, path in mounts.items():
                try:
                    self.drop_caches()
                    iops[name] = self.fio(path, jobs)
                except Exception as e:
                    self.fail("rand-4k", f"{name} {jobs}j", getattr(e, "stderr", "") or e)
            for name, v in iops.items():
                for peer in ("squashfuse_ll", "nbdfuse+qemu-nbd"):
                    if name.startswith("hexz") and peer in iops and iops[peer] > 0:
                        self.record("rand-4k", f"{name} {jobs} job(s)", v, "IOPS",
                                    None, peer, v / iops[peer])
                if not name.startswith("hexz"):
                    self.record("rand-4k", f"{name} {jobs} job(s)", v, "IOPS")

    # ---------------------------------------------------------- FUSE ceiling
    def bench_fuse_ceiling(self):
        """Sequential read of the default hexz mount against the FUSE ceiling:
        a hexz mount of the same image packed with --compression none (no
        decompression, the same FUSE path). The two alternate run by run."""
        try:
            none = self.path("real-none.st")
            self.sh([self.hexz, "pack", "--disk", self.images["real"], "--output", none,
                     "--compression", "none", "--quiet"])
            ceiling = self.mount_hexz(none, self.path("mnt-hexz-none"))
            default = self.mount_hexz(self.outputs["hexz pack lz4"],
                                      self.path("mnt-hexz-default"))
        except Exception as e:
            return self.fail("seq-read", "FUSE ceiling", getattr(e, "stderr", "") or e)
        times = {"ceiling": [], "default": []}
        try:
            for _ in range(self.args.runs):
                for key, path in (("ceiling", ceiling), ("default", default)):
                    self.drop_caches()
                    t0 = time.monotonic()
                    self.sh(["dd", f"if={path}", "of=/dev/null", "bs=1M"])
                    times[key].append(time.monotonic() - t0)
        except Exception as e:
            return self.fail("seq-read", "FUSE ceiling", getattr(e, "stderr", "") or e)
        med = {k: statistics.median(v) for k, v in times.items()}
        noise = {k: (max(v) - min(v)) / med[k] if med[k] > 0 else 0.0
                 for k, v in times.items()}
        peer = "hexz --compression none (FUSE ceiling)"
        self.record("seq-read", peer, self.mib_per_s(self.real_size, med["ceiling"]),
                    "MiB/s", noise["ceiling"], note="the same image stored uncompressed")
        self.record("seq-read", "hexz (default settings)",
                    self.mib_per_s(self.real_size, med["default"]), "MiB/s",
                    noise["default"], peer, med["ceiling"] / med["default"],
                    "lz4, 64 KiB blocks, no cache; runs alternate with the ceiling's")

    # ------------------------------------------------------------------- RSS
    def peak_rss_mib(self, cmd):
        """Runs cmd to completion; returns its peak RSS in MiB. GNU time runs
        it: a child forked from this (large) Python process would count the
        parent's RSS in its ru_maxrss, since the kernel keeps the copied
        address space's high-water mark across the exec."""
        import tempfile
        with tempfile.NamedTemporaryFile(mode="r") as out, tempfile.TemporaryFile() as err:
            p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name] + cmd, env=self.env,
                               stdout=subprocess.DEVNULL, stderr=err)
            if p.returncode != 0:
                err.seek(0)
                raise RuntimeError(f"{cmd[:2]} exited {p.returncode}: "
                                   f"{err.read().decode(errors='replace')[-500:]}")
            return int(out.read().split()[-1]) / 1024.0  # KiB

    def record_rss(self, name, mib, note):
        self.record("rss", name, mib, "MiB", None, f"goal < {RSS_GOAL_MIB} MiB",
                    RSS_GOAL_MIB / mib if mib > 0 else None,
                    f"peak RSS; ratio > 1 is under the goal; {note}")

    def bench_rss(self):
        """Peak RSS of pack (the real image; a big sparse disk, whose index is
        the largest part) and of a worker without a cache serving 4 parallel
        readers, against the 64 MiB goal."""
        img = self.images["real"]
        out = self.path("rss.st")
        sparse_gib = 16 if self.args.quick else 256
        sparse = self.path("sparse.img")
        with open(sparse, "wb") as f:
            f.truncate(sparse_gib << 30)
        packs = [
            ("hexz pack lz4 (real image)", ["--disk", img], "lz4"),
            (f"hexz pack zstd level {ZSTD_LEVEL} (real image)",
             ["--disk", img, "--compression", "zstd", "--level", str(ZSTD_LEVEL)], "zstd"),
            (f"hexz pack of a {sparse_gib} GiB sparse disk", ["--disk", sparse],
             f"{(sparse_gib << 30) // (64 << 10)} blocks of 64 KiB: the index dominates"),
        ]
        for name, args, note in packs:
            try:
                mib = self.peak_rss_mib([self.hexz, "pack", *args, "--output", out, "--quiet"])
                self.record_rss(name, mib, note)
            except Exception as e:
                self.fail("rss", name, e)
        os.remove(sparse)
        name = "hexz-fused without a cache, 4 parallel readers"
        try:
            mnt = self.path("mnt-hexz-rss")
            os.makedirs(mnt, exist_ok=True)
            msg = self.sh([self.hexz, "mount", self.outputs["hexz pack lz4"], mnt,
                           "--daemon"]).stdout
            self.cleanups.append(lambda: self.sh([self.hexz, "unmount", mnt], check=False))
            pid = int(msg.split("worker pid ")[1].split(",")[0].split(")")[0])
            disk = os.path.join(mnt, "disk")
            self.drop_caches()
            self.fio(disk, 4)
            self.sh(["fio", "--name=seq", f"--filename={disk}", "--readonly", "--rw=read",
                     "--bs=1M", "--ioengine=psync", "--numjobs=4", "--offset_increment=25%",
                     "--size=25%", "--invalidate=1", "--group_reporting"])
            with open(f"/proc/{pid}/status") as f:
                hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
            self.record_rss(name, hwm / 1024.0,
                            "VmHWM after fio randread 4 KiB and read 1 MiB, numjobs=4")
        except Exception as e:
            self.fail("rss", name, getattr(e, "stderr", "") or e)

    # ------------------------------------------------------------------- NBD
    def bench_nbd(self):
        servers = {}
        try:
            sock = self.serve_unix("hexz.sock", lambda s: [
                self.hexz, "serve", self.outputs["hexz pack lz4"], "--socket", s])
            servers["hexz serve"] = f"nbd+unix:///disk?socket={sock}"
        except Exception as e:
            self.fail("nbd", "hexz serve", e)
        try:
            servers["qemu-nbd qcow2 zstd"] = f"nbd+unix:///?socket={self.qemu_nbd()}"
        except Exception as e:
            self.fail("nbd", "qemu-nbd", e)
        try:
            ksock = self.serve_unix("nbdkit.sock", lambda s: [
                "nbdkit", "-f", "-r", "-U", s, "file", self.images["real"]])
            servers["nbdkit file (raw)"] = f"nbd+unix:///?socket={ksock}"
        except Exception as e:
            self.fail("nbd", "nbdkit", e)
        res = {}
        for name, uri in servers.items():
            try:
                res[name] = self.timed(lambda: self.sh(["nbdcopy", uri, "null:"]),
                                       prepare=self.drop_caches)
            except Exception as e:
                self.fail("nbd", name, getattr(e, "stderr", "") or e)
        for name, (med, noise) in res.items():
            if name == "hexz serve":
                for peer in ("qemu-nbd qcow2 zstd", "nbdkit file (raw)"):
                    if peer in res:
                        self.record("nbd", "nbdcopy from hexz serve",
                                    self.mib_per_s(self.real_size, med), "MiB/s",
                                    noise, peer, res[peer][0] / med)
            else:
                self.record("nbd", f"nbdcopy from {name}",
                            self.mib_per_s(self.real_size, med), "MiB/s", noise)

    # --------------------------------------------------------------- NBD TLS
    @staticmethod
    def free_port():
        import socket as socketlib
        with socketlib.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def serve_tcp(self, name, cmd_for_port):
        """Starts a TCP server on a free loopback port; returns the port once
        it accepts."""
        import socket as socketlib
        port = self.free_port()
        self.spawn(cmd_for_port(port))
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                socketlib.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{name}: the server did not start")

    def bench_nbd_tls(self):
        """nbdcopy over loopback TCP with and without TLS (pre-shared keys,
        the same for both servers): what TLS costs hexz serve, and the same
        for nbdkit serving the raw image."""
        snap = getattr(self, "outputs", {}).get("hexz pack lz4")
        if not snap:  # run on its own (--only nbd-tls)
            snap = self.path("tls.st")
            if not os.path.exists(snap):
                self.sh([self.hexz, "pack", "--disk", self.images["real"], "-o", snap, "-q"])
        keys = self.path("tls.psk")
        if not os.path.exists(keys):
            self.sh(["psktool", "-u", "bench", "-p", keys])
        plain, tls = "", f"?tls-psk-file={keys}"
        servers = {
            "hexz serve": (lambda p, t: [self.hexz, "serve", snap, "--listen",
                                         f"127.0.0.1:{p}"] +
                           (["--tls-psk", keys] if t else [])),
            "nbdkit file (raw)": (lambda p, t: ["nbdkit", "-f", "-r", "-i", "127.0.0.1",
                                                "-p", str(p)] +
                                  (["--tls=require", f"--tls-psk={keys}"] if t else []) +
                                  ["file", self.images["real"]]),
        }
        res = {}
        for name, cmd in servers.items():
            for t in (False, True):
                label = f"{name}{' TLS' if t else ''}"
                try:
                    port = self.serve_tcp(label, lambda p: cmd(p, t))
                    scheme = "nbds://bench@" if t else "nbd://"
                    export = "disk" if name == "hexz serve" else ""
                    uri = f"{scheme}127.0.0.1:{port}/{export}{tls if t else plain}"
                    res[label] = self.timed(lambda: self.sh(["nbdcopy", uri, "null:"]),
                                            prepare=self.drop_caches)
                except Exception as e:
                    self.fail("nbd-tls", label, getattr(e, "stderr", "") or e)
        for name in servers:
            if f"{name} TLS" not in res:
                continue
            med, noise = res[f"{name} TLS"]
            rate = self.mib_per_s(self.real_size, med)
            if name in res:
                self.record("nbd-tls", f"nbdcopy from {name}, TLS (PSK)", rate, "MiB/s",
                            noise, f"{name} without TLS", res[name][0] / med,
                            "ratio < 1: the cost of TLS")
            if name == "hexz serve" and "nbdkit file (raw) TLS" in res:
                self.record("nbd-tls", "nbdcopy from hexz serve, TLS (PSK)", rate, "MiB/s",
                            noise, "nbdkit --tls file (raw)",
                            res["nbdkit file (raw) TLS"][0] / med)

    # ------------------------------------------------------------ in-process
    def bench_inprocess(self):
        for tool in ("read_bench", "cache_bench"):
            exe = os.path.join(self.build, "bench", tool)
            if not os.path.exists(exe):
                self.fail("in-process", tool, f"{exe} not built")
                continue
            try:
                out = self.sh([exe, "--json", self.outputs.get("hexz pack lz4", ""),
                               self.outputs.get(f"hexz pack zstd (level {ZSTD_LEVEL})",
                                                "")]).stdout
                for r in json.loads(out):
                    self.record("in-process", r["name"], r["value"], r["unit"],
                                r.get("noise"), r.get("peer"), r.get("ratio"),
                                r.get("note", ""))
            except Exception as e:
                self.fail("in-process", tool, getattr(e, "stderr", "") or e)

    # ---------------------------------------------------------------- remote
    def start_nginx(self):
        """nginx serving the work directory on a free 127.0.0.1 port (own
        prefix); returns its base URL."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        d = self.path("nginx")
        os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""daemon off; master_process off; worker_processes 1;
pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
  default_type application/octet-stream; access_log off; sendfile on;
  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
  server {{ listen 127.0.0.1:{port}; root {self.work}; }}
}}
""")
        p = self.spawn(["/usr/sbin/nginx", "-p", d, "-c", conf])
        end = time.monotonic() + 10
        while time.monotonic() < end and p.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                return f"http://127.0.0.1:{port}"
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not start (see {d}/error.log)")

    def bench_remote(self):
        """Reads of one snapshot over HTTP (nginx on loopback) against the
        same reads of the local file, and qemu-img reading the qcow2 of the
        same disk over HTTP through its curl driver. Cold = page cache
        dropped before each run (the server's and the client's); warm = not.
        Runs alternate between the tools. Then FUSE mounts of the URL next
        to a mount of the local file (bench_remote_mount)."""
        snap = self.outputs.get("hexz pack lz4")
        qcow2 = self.outputs.get("qemu-img qcow2 zstd")
        if not snap:
            self.fail("remote", "hexz cat URL", "no lz4 snapshot")
            return
        try:
            base = self.start_nginx()
        except Exception as e:
            self.fail("remote", "nginx", e)
            return
        out = self.path("remote-out.raw")
        url = lambda p: base + "/" + os.path.relpath(p, self.work)
        tools = {
            "hexz cat URL": [self.hexz, "cat", url(snap), "-o", out],
            "hexz cat local": [self.hexz, "cat", snap, "-o", out],
        }
        if qcow2:
            # -m 1: QEMU 7.2's curl driver hangs with convert's default of
            # 8 parallel coroutines (seen with nginx and libcurl 7.88).
            tools["qemu-img convert http qcow2"] = [
                "qemu-img", "convert", "-m", "1", "-f", "qcow2", "-O", "raw", url(qcow2), out]
        for temp, prepare in (("cold", self.drop_caches), ("warm", None)):
            times = {name: [] for name in tools}
            for _ in range(self.args.runs):  # alternate, then take medians
                for name, cmd in tools.items():
                    if prepare:
                        prepare()
                    t0 = time.monotonic()
                    try:
                        self.sh(cmd, timeout=120 if self.args.quick else 900)
                    except Exception as e:
                        self.fail("remote", f"{name} ({temp})", getattr(e, "stderr", "") or e)
                        times[name] = None
                        continue
                    if times[name] is not None:
                        times[name].append(time.monotonic() - t0)
            med = {n: statistics.median(t) for n, t in times.items() if t}
            noise = {n: (max(t) - min(t)) / med[n] if med[n] > 0 else 0.0
                     for n, t in times.items() if t}
            for name, m in med.items():
                rate = self.mib_per_s(self.real_size, m)
                peers = [p for p in tools if p != name and p in med] if name == "hexz cat URL" else []
                for peer in peers:  # ratio > 1: hexz over HTTP is faster than the peer
                    self.record("remote", f"sequential {temp}: {name}", rate, "MiB/s",
                                noise[name], peer, med[peer] / m)
                if not peers:
                    self.record("remote", f"sequential {temp}: {name}", rate, "MiB/s",
                                noise[name])
        if os.path.exists(out):
            os.unlink(out)
        self.bench_remote_mount(url(snap), snap)

    def bench_remote_mount(self, url, snap):
        """A FUSE mount of the snapshot from its URL (the worker reads through
        the fetcher) against a FUSE mount of the local file: sequential dd
        cold (page cache dropped, a fresh mount each run) and warm (the same
        mount again), and random 4K reads (fio, 1 and 4 jobs)."""
        limit = 120 if self.args.quick else 900
        mnt = self.path("remote-mnt")
        res = {}
        for name, src in (("FUSE mount URL", url), ("FUSE mount local", snap)):
            def dd(disk):
                t0 = time.monotonic()
                self.sh(["dd", f"if={disk}", "of=/dev/null", "bs=1M"], timeout=limit)
                return time.monotonic() - t0
            try:
                cold = []
                for _ in range(self.args.runs):
                    self.drop_caches()
                    cold.append(dd(self.mount_hexz(src, mnt)))
                    self.sh([self.hexz, "unmount", mnt])
                disk = self.mount_hexz(src, mnt)
                dd(disk)  # warms the mount
                warm = [dd(disk) for _ in range(self.args.runs)]
                iops = {jobs: self.fio(disk, jobs) for jobs in (1, 4)}
                self.sh([self.hexz, "unmount", mnt])
            except Exception as e:
                self.fail("remote", name, getattr(e, "stderr", "") or e)
                self.sh([self.hexz, "unmount", mnt], check=False)
                continue
            res[name] = (statistics.median(cold), statistics.median(warm), iops)
        local = res.get("FUSE mount local")
        for name, (cold, warm, iops) in res.items():
            peer = "FUSE mount local" if name != "FUSE mount local" and local else None
            for i, (temp, m) in enumerate((("cold", cold), ("warm", warm))):
                # ratio > 1: the URL mount is faster than the local one
                self.record("remote", f"sequential {temp}: {name}",
                            self.mib_per_s(self.real_size, m), "MiB/s", None, peer,
                            local[i] / m if peer else None)
            for jobs, v in iops.items():
                self.record("remote", f"random 4K, {jobs} jobs: {name}", v, "IOPS", None,
                            peer, v / local[2][jobs] if peer and local[2][jobs] else None)
        self.bench_remote_disk_cache(url, local[0] if local else None, limit)

    def bench_remote_disk_cache(self, url, local_cold, limit):
        """A fresh FUSE mount of the URL with a warm --disk-cache (filled by
        one mount before): sequential dd with the page cache dropped, against
        a cold mount of the local file. No request reaches the server for the
        disk's blocks; the front-end still reads the header and index."""
        mnt = self.path("remote-mnt")
        cache = self.path("remote-disk-cache") + ":4G"
        name = "FUSE mount URL --disk-cache (warm)"
        shutil.rmtree(self.path("remote-disk-cache"), ignore_errors=True)
        try:
            disk = self.mount_hexz(url, mnt, ("--disk-cache", cache))
            self.sh(["dd", f"if={disk}", "of=/dev/null", "bs=1M"], timeout=limit)  # fills it
            self.sh([self.hexz, "unmount", mnt])
            runs = []
            for _ in range(self.args.runs):
                self.drop_caches()
                disk = self.mount_hexz(url, mnt, ("--disk-cache", cache))
                t0 = time.monotonic()
                self.sh(["dd", f"if={disk}", "of=/dev/null", "bs=1M"], timeout=limit)
                runs.append(time.monotonic() - t0)
                self.sh([self.hexz, "unmount", mnt])
        except Exception as e:
            self.fail("remote", name, getattr(e, "stderr", "") or e)
            self.sh([self.hexz, "unmount", mnt], check=False)
            return
        finally:
            shutil.rmtree(self.path("remote-disk-cache"), ignore_errors=True)
        m = statistics.median(runs)
        peer = "FUSE mount local" if local_cold else None
        # ratio > 1: the mount over the warm disk cache is faster than the local one
        self.record("remote", f"sequential cold: {name}", self.mib_per_s(self.real_size, m),
                    "MiB/s", None, peer, local_cold / m if peer else None)

    # ---------------------------------------------------------------- commit
    def bench_commit(self):
        """A commit of an overlay with 1% of the 64 KiB blocks modified,
        standalone and --thin, each as a ratio to a full pack of the image."""
        base = self.outputs.get("hexz pack lz4")
        if not base:
            return self.fail("commit", "commit 1%", "no base snapshot")
        try:
            overlay = self.modify_one_percent(base)
            pack = self.timed(lambda: self.sh(
                [self.hexz, "pack", "--disk", self.images["real"], "--output",
                 self.path("repack.st"), "--quiet"]))
        except Exception as e:
            return self.fail("commit", "commit 1%", getattr(e, "stderr", "") or e)
        out = self.path("committed.st")
        for name, extra in (("standalone", []), ("--thin", ["--thin"])):
            try:
                commit = self.timed(lambda: self.sh(
                    [self.hexz, "commit", "--base", base, "--overlay", overlay,
                     "--output", out, "--quiet", *extra]),
                    prepare=lambda: os.path.exists(out) and os.remove(out))
                self.record("commit", f"hexz commit {name} (1% modified)",
                            self.mib_per_s(self.real_size, commit[0]), "MiB/s",
                            commit[1], "hexz pack (full)", pack[0] / commit[0],
                            f"commit {commit[0]:.2f}s vs pack {pack[0]:.2f}s; "
                            f"output {os.path.getsize(out) / MiB:.1f} MiB")
            except Exception as e:
                self.fail("commit", f"commit {name} 1%", getattr(e, "stderr", "") or e)

    def modify_one_percent(self, base):
        """Writes 4 KiB into 1% of the 64 KiB blocks of `base` through a
        read-write mount; returns the overlay."""
        overlay = self.path("commit.overlay")
        for p in (overlay, overlay + ".meta"):
            if os.path.exists(p):
                os.remove(p)
        mnt = self.path("mnt-rw")
        os.makedirs(mnt, exist_ok=True)
        self.sh([self.hexz, "mount", base, mnt, "--rw", "--overlay", overlay, "--daemon"])
        blocks = self.real_size // (64 * 1024)
        rng = random.Random(7)
        with open(os.path.join(mnt, "disk"), "r+b") as f:
            for b in rng.sample(range(blocks), max(1, blocks // 100)):
                f.seek(b * 64 * 1024)
                f.write(os.urandom(4096))
            f.flush()
            os.fsync(f.fileno())
        self.sh([self.hexz, "unmount", mnt])
        return overlay

    # -------------------------------------------------------------------- vm
    def qmp(self, sock, command, args=None, timeout=120):
        """One QMP command on `sock`; returns its "return" value."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(sock)
            f = s.makefile("rw")
            json.loads(f.readline())
            for cmd, a in (("qmp_capabilities", None), (command, args)):
                f.write(json.dumps({"execute": cmd, **({"arguments": a} if a else {})}) + "\n")
                f.flush()
                while True:
                    m = json.loads(f.readline())
                    if "event" in m:
                        continue
                    if "error" in m:
                        raise RuntimeError(f"QMP {cmd}: {m['error']['desc']}")
                    break
            return m["return"]

    def start_vm(self, disk, sock, extra=()):
        """The bench guest: the firmware alone (no OS; TCG), with `disk`
        (qcow2) as its one drive and QMP on `sock`. Returns the process
        once QMP answers."""
        if os.path.exists(sock):
            os.remove(sock)
        p = self.spawn(["qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", "256",
                        "-nodefaults", "-display", "none", "-no-user-config",
                        "-drive", f"file={disk},if=none,id=d0,format=qcow2",
                        "-device", "virtio-blk-pci,drive=d0",
                        "-qmp", f"unix:{sock},server=on,wait=off", *extra])
        if not self.wait_file(sock, 60):
            raise RuntimeError("QEMU did not start: " + p.stderr.read().decode())
        return p

    def vm_capture(self, sock, out):
        """hexz vm snapshot --continue of the guest at `sock` into `out`;
        returns how long the guest was paused, as hexz prints it."""
        r = self.sh([self.hexz, "vm", "snapshot", "--qmp", sock, "--output", out,
                     "--continue"])
        m = re.search(r"the guest was paused for ([0-9.]+) s", r.stdout)
        if not m:
            raise RuntimeError(f"hexz vm snapshot printed no pause: {r.stdout!r}")
        return float(m.group(1))

    def wait_running(self, sock, timeout=120):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if self.qmp(sock, "query-status")["status"] == "running":
                    return
            except (OSError, RuntimeError, ValueError):
                pass
            time.sleep(0.005)
        raise RuntimeError(f"the guest at {sock} did not run within {timeout} s")

    def bench_vm(self):
        """hexz vm snapshot and hexz vm resume against QEMU's own savevm and
        loadvm (an internal snapshot in the qcow2), on one guest: the firmware
        alone with 256 MiB of memory (mostly zero pages: no OS runs) and the
        real image as its qcow2 disk. Capture: the guest running until it is
        captured (hexz: --continue, disk and memory into a standalone
        snapshot; savevm: memory into the qcow2, whose disk is already
        there). Resume: from the start of the command until the guest runs
        (hexz vm resume; QEMU -loadvm). Sizes: the .st against the qcow2
        with its internal snapshot. Then the capture of the resumed guest,
        whose disk hexz serves: thin against the first snapshot."""
        sec = "vm"
        if subprocess.run(["which", "qemu-system-x86_64"], stdout=subprocess.DEVNULL).returncode:
            return self.fail(sec, "vm snapshot", "qemu-system-x86_64 is not installed")
        qcow2, st = self.path("vm.qcow2"), self.path("vm.st")
        sock, rsock = self.path("vm.qmp"), self.path("vm-resume.qmp")
        self.env.setdefault("XDG_RUNTIME_DIR", self.work)
        try:
            self.sh(["qemu-img", "convert", "-O", "qcow2", self.images["real"], qcow2])
            # Written back now: else the first capture's `cont` (QEMU flushes
            # the image when it takes it back after the migration) would.
            os.sync()
            # QEMU's migration limit (32 MiB/s) is left as it is: hexz vm
            # snapshot lifts it for its capture, and savevm has none.
            vm = self.start_vm(qcow2, sock)
            pauses = []
            cap = self.timed(lambda: pauses.append(self.vm_capture(sock, st)),
                             prepare=lambda: os.path.exists(st) and os.remove(st))
            save = self.timed(lambda: self.qmp(
                sock, "human-monitor-command", {"command-line": "savevm bench"}),
                prepare=lambda: self.qmp(sock, "human-monitor-command",
                                         {"command-line": "delvm bench"}))
            self.kill(vm)
            st_mib, q_mib = os.path.getsize(st) / MiB, os.path.getsize(qcow2) / MiB
            self.record(sec, "hexz vm snapshot --continue (whole command)", cap[0], "s",
                        cap[1], "QEMU savevm (qcow2)", save[0] / cap[0],
                        f"savevm {save[0]:.2f}s; hexz reads and compresses the whole "
                        "disk, savevm writes only memory; ratio > 1: hexz faster")
            pause = statistics.median(pauses)
            self.record(sec, "hexz vm snapshot --continue: the guest paused", pause, "s",
                        self.noise(pauses), "QEMU savevm (qcow2)", save[0] / max(pause, 0.005),
                        f"as printed by hexz: only the memory is migrated during the pause "
                        "(the guest's writes go to a temporary qcow2 while the disk is read); "
                        f"savevm {save[0]:.2f}s pauses the guest throughout; ratio > 1: hexz "
                        "pauses it for less")
            self.record(sec, "hexz vm snapshot size", st_mib, "MiB", None,
                        "qcow2 with internal snapshot", q_mib / st_mib,
                        f"qcow2 {q_mib:.1f} MiB; ratio > 1: hexz smaller")
        except Exception as e:
            return self.fail(sec, "vm snapshot", getattr(e, "stderr", "") or e)

        def start_resume():
            p = subprocess.Popen([self.hexz, "vm", "resume", st, "--qmp", rsock],
                                 env=self.env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 start_new_session=True, text=True)
            line = p.stdout.readline()
            if not line.startswith("hexz: resumed"):
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(60)
                raise RuntimeError(f"hexz vm resume: {line!r}")
            return p

        # Timed until the guest runs; each run's guest is stopped untimed
        # (before the next run, and after the last).
        running = []

        def stop_running():
            while running:
                self.kill(running.pop())

        def hexz_resume():
            running.append(start_resume())

        def qemu_loadvm():
            running.append(self.start_vm(qcow2, sock, ["-loadvm", "bench"]))
            self.wait_running(sock)
        try:
            res = self.timed(hexz_resume, prepare=stop_running)
            stop_running()
            load = self.timed(qemu_loadvm, prepare=stop_running)
            stop_running()
            self.record(sec, "hexz vm resume (until running)", res[0], "s", res[1],
                        "QEMU -loadvm (qcow2)", load[0] / res[0],
                        f"loadvm {load[0]:.2f}s; both include QEMU's start, until the guest "
                        "runs (stopping it is not timed)")
        except Exception as e:
            self.fail(sec, "vm resume", getattr(e, "stderr", "") or e)
        # The capture of a guest resumed by hexz: only its changes are read
        # (none here but what the firmware wrote), thin against vm.st.
        # Each capture of the running guest makes its output the guest's new
        # base (its later writes go to a fresh overlay over it), so every run
        # writes a new file, thin against the one before: a chain.
        outs = []

        def capture_resumed():
            out = self.path(f"vm2-{len(outs) + 1}.st")
            if os.path.exists(out):
                os.remove(out)
            outs.append(out)
            pauses2.append(self.vm_capture(rsock, out))

        try:
            p = start_resume()
            self.cleanups.append(lambda: self.kill(p))
            pauses2 = []
            cap2 = self.timed(capture_resumed)
            self.kill(p)
            sizes = ", ".join(f"{os.path.getsize(o) / MiB:.1f}" for o in outs)
            self.record(sec, "hexz vm snapshot of a resumed guest (thin, whole command)",
                        cap2[0], "s", cap2[1], "QEMU savevm (qcow2)", save[0] / cap2[0],
                        f"savevm {save[0]:.2f}s; outputs {sizes} MiB, each thin against "
                        "the one before (the first against vm.st)")
            pause2 = statistics.median(pauses2)
            self.record(sec, "hexz vm snapshot of a resumed guest: the guest paused", pause2,
                        "s", self.noise(pauses2), "QEMU savevm (qcow2)",
                        save[0] / max(pause2, 0.005),
                        f"savevm {save[0]:.2f}s; only the memory is migrated during the pause "
                        "(the disk is written after it); ratio > 1: hexz pauses it for less")
        except Exception as e:
            self.fail(sec, "vm snapshot of a resumed guest", getattr(e, "stderr", "") or e)

    # ---------------------------------------------------------------- report
    def versions(self):
        def first_line(cmd):
            try:
                r = subprocess.run(cmd, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
                return r.stdout.strip().splitlines()[0]
            except Exception:
                return "not found"
        return {
            "hexz": first_line([self.hexz, "--version"]),
            "qemu-img": first_line(["qemu-img", "--version"]),
            "mksquashfs": first_line(["mksquashfs", "-version"]),
            "squashfuse": first_line(["dpkg-query", "-W", "squashfuse"]),
            "nbdkit": first_line(["nbdkit", "--version"]),
            "nbdcopy": first_line(["nbdcopy", "--version"]),
            "fio": first_line(["fio", "--version"]),
            "lz4": first_line(["lz4", "-V"]),
            "zstd": first_line(["zstd", "-V"]),
        }

    def report(self):
        date = datetime.date.today().isoformat()
        mode = "quick" if self.args.quick else "full"
        os.makedirs(self.args.out, exist_ok=True)
        base = os.path.join(self.args.out, f"{date}-{mode}")
        machine = {
            "date": date, "mode": mode, "cores": os.cpu_count(),
            "sections": [[n, round(t, 1), round(st, 3)] for n, t, st in self.timings],
            "interrupted": self.interrupted,
            "kernel": platform.release(), "runs": self.args.runs,
            "real_image_bytes": getattr(self, "real_size", 0),
            "versions": self.versions(),
        }
        with open(base + ".json", "w") as f:
            json.dump({"machine": machine, "results": self.rows}, f, indent=2)
        lines = [f"# hexz benchmark report ({date}, {mode} mode)", "",
                 f"Machine: {machine['cores']} cores, kernel {machine['kernel']}. "
                 f"Medians of {self.args.runs} run(s); noise = (max-min)/median. "
                 "Ratios > 1 mean hexz is faster than the peer.", "",
                 "| section | measurement | value | noise | vs peer | ratio | note |",
                 "| --- | --- | ---: | ---: | --- | ---: | --- |"]
        for r in self.rows:
            v = ("-" if r["value"] is None else
                 f"{r['value']:.{2 if abs(r['value']) < 10 else 1}f} {r['unit']}")
            n = "-" if r["noise"] is None else f"{100 * r['noise']:.0f}%"
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
            lines.append(f"| {r['section']} | {r['name']} | {v} | {n} | "
                         f"{r['peer'] or '-'} | {ratio} | {r['note']} |")
        if self.timings:
            lines += ["", "Sections run (wall time, and the share of CPU time the "
                      "hypervisor stole from this machine meanwhile: high steal makes "
                      "wall-clock figures noisy): " +
                      ", ".join(f"{n} {t:.0f}s (steal {100 * st:.0f}%)"
                                for n, t, st in self.timings) + "."]
        if self.interrupted:
            lines += ["", f"**Interrupted in section {self.interrupted}**: its rows, if any, "
                      "are partial, and the sections after it did not run."]
        lines += ["", "Versions:", ""]
        lines += [f"- {k}: {v}" for k, v in machine["versions"].items()]
        with open(base + ".md", "w") as f:
            f.write("\n".join(lines) + "\n")
        self.chart(base + ".png")
        print("\n".join(lines))
        print(f"\nreport: {base}.md, {base}.json, {base}.png")

    def chart(self, path):
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib missing: no chart")
            return
        sections = ["pack", "seq-read", "nbd"]
        fig, axes = plt.subplots(1, len(sections), figsize=(15, 5))
        for ax, sec in zip(axes, sections):
            seen = {}
            for r in self.rows:
                if r["section"] == sec and r["value"] is not None:
                    seen.setdefault(r["name"], r["value"])
            names = list(seen)
            ax.barh(names, [seen[n] for n in names],
                    color=["tab:orange" if "hexz" in n else "tab:blue" for n in names])
            ax.set_title(f"{sec} (MiB/s, higher is better)")
            ax.tick_params(axis="y", labelsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=90)

    def run(self):
        sections = {
            "pack": self.bench_pack, "synthetic": self.bench_synthetic,
            "fuse": self.bench_fuse, "fuse-ceiling": self.bench_fuse_ceiling,
            "nbd": self.bench_nbd, "nbd-tls": self.bench_nbd_tls,
            "in-process": self.bench_inprocess, "commit": self.bench_commit,
            "rss": self.bench_rss, "remote": self.bench_remote, "vm": self.bench_vm,
        }
        self.timings = []  # (section, seconds, steal share) of the sections that ran
        self.interrupted = None
        try:
            self.prepare_data()
            for name, bench in sections.items():
                if self.args.only and name not in self.args.only:
                    continue
                started, cpu = time.monotonic(), cpu_times()
                bench()
                self.timings.append((name, time.monotonic() - started, steal_share(cpu)))
        except KeyboardInterrupt:
            # Ctrl+C (or SIGINT from a time limit): the report still holds
            # the sections that finished, and says where the run stopped.
            self.interrupted = name if "name" in locals() else "prepare"
            print(f"bench: interrupted in section {self.interrupted}", file=sys.stderr)
        finally:
            for c in reversed(self.cleanups):
                try:
                    c()
                except Exception:
                    pass
        self.report()


def cpu_times():
    """The machine's CPU counters (the `cpu` line of /proc/stat)."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def steal_share(before):
    """The share of CPU time stolen by the hypervisor since `before`."""
    after = cpu_times()
    d = [a - b for a, b in zip(after, before)]
    total = sum(d[:8])  # user nice system idle iowait irq softirq steal
    return d[7] / total if total > 0 and len(d) > 7 else 0.0


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", required=True)
    ap.add_argument("--quick", action="store_true", help="small data, 1 run")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--work", default=os.path.join(here, "work"))
    ap.add_argument("--out", default=os.path.join(here, "results"))
    ap.add_argument("--only", action="append", metavar="SECTION",
                    help="run only this section (repeatable): pack, synthetic, fuse, "
                    "fuse-ceiling, nbd, nbd-tls, in-process, commit, rss, remote, vm; fuse, nbd, "
                    "commit and remote need pack")
    args = ap.parse_args()
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.quick:
        args.work = args.work + "-quick"
    Bench(args).run()


if __name__ == "__main__":
    sys.exit(main())
