#!/usr/bin/env python3
"""The guest half of test/condition-vm.test.ts, run by /sbin/nfh-init inside the VM.

Python, not node: node takes about 11 s to start under emulation, python about 1 s, so
node runs only where nf-healthd itself does. One process holds the whole lab: the SMTP
backends' listening sockets and the client's sockets are made in their network
namespaces (setns around socket()), served by threads, and counted here.

Layout (second disk, mounted read-only at /nfh): node, app/ (bin, dist, production
node_modules), vm/ (this file, recipe.rules), run/ (configs and `nf-healthd rules`
output made by the test on the host).

Results: one JSON object per line on /dev/ttyS1, {"step": NAME, "ok": true, "ms": ...,
...data} or {"step": NAME, "ok": false, "error": ..., "log": [...]}. The test asserts on
the data; this file only measures (its own checks are about waiting, not verdicts).
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import threading
import time
import traceback

NFH = "/nfh"
NODE = f"{NFH}/node"
BIN = f"{NFH}/app/bin/nf-healthd.js"
RUN = f"{NFH}/run"
VIP = "10.0.0.1"
CLIENT = "10.0.0.2"
USER = 4242  # uid and gid of the unprivileged daemon (no passwd entry needed)
BACKENDS = 4
T0 = time.monotonic()

results = open("/dev/ttyS1", "w", buffering=1)


def emit(step, **data):
    results.write(json.dumps({"step": step, "t": round(time.monotonic() - T0, 2), **data}) + "\n")


def log(text):
    print(f"[guest {time.monotonic() - T0:7.2f}s] {text}", flush=True)


# --- network namespaces ---------------------------------------------------------------

libc = ctypes.CDLL("libc.so.6", use_errno=True)
CLONE_NEWNET = 0x40000000
ROOT_NS = os.open("/proc/self/ns/net", os.O_RDONLY)


def enter(ns):
    """Moves this thread into network namespace ns (None: the VM's own)."""
    fd = ROOT_NS if ns is None else os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
    finally:
        if fd != ROOT_NS:
            os.close(fd)


def socket_in(ns):
    enter(ns)
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    finally:
        enter(None)


def sh(*argv, input=None, ns=None, check=True):
    full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    r = subprocess.run(full, input=input, capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def lb(*argv, input=None, check=True):
    return sh(*argv, input=input, ns="lb", check=check)


def build_lab():
    """client (10.0.0.2) -- bond0.204 10.0.0.1 [lb, br0 192.168.0.254] -- be1..be4 (192.168.0.N)."""
    for ns in ["client", "lb"] + [f"be{i}" for i in range(1, BACKENDS + 1)]:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", "lb", "link", "add", "bond0.204", "type", "veth", "peer", "name", "eth0", "netns", "client")
    sh("ip", "-n", "lb", "addr", "add", f"{VIP}/24", "dev", "bond0.204")
    sh("ip", "-n", "lb", "link", "set", "bond0.204", "up")
    sh("ip", "-n", "client", "addr", "add", f"{CLIENT}/24", "dev", "eth0")
    sh("ip", "-n", "client", "link", "set", "eth0", "up")
    sh("ip", "-n", "lb", "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", "lb", "addr", "add", "192.168.0.254/24", "dev", "br0")
    sh("ip", "-n", "lb", "link", "set", "br0", "up")
    for i in range(1, BACKENDS + 1):
        sh("ip", "-n", "lb", "link", "add", f"vbe{i}", "type", "veth", "peer", "name", "eth0", "netns", f"be{i}")
        sh("ip", "-n", "lb", "link", "set", f"vbe{i}", "master", "br0", "up")
        sh("ip", "-n", f"be{i}", "addr", "add", f"192.168.0.{i}/24", "dev", "eth0")
        sh("ip", "-n", f"be{i}", "link", "set", "eth0", "up")
        # Replies must pass the balancer to be un-NATed.
        sh("ip", "-n", f"be{i}", "route", "add", "default", "via", "192.168.0.254")
    lb("sh", "-c", "echo 1 >/proc/sys/net/ipv4/ip_forward")


# --- SMTP backends and the client ------------------------------------------------------

counts_lock = threading.Lock()


class Backend:
    """An SMTP banner server on 192.168.0.N:25 in namespace beN; counts the client's connections."""

    def __init__(self, i):
        self.name = f"be{i}"
        self.sock = None
        self.accepted = 0

    def start(self):
        s = socket_in(self.name)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 25))
        s.listen(128)
        self.sock = s
        threading.Thread(target=self.serve, args=(s,), daemon=True).start()

    def stop(self):
        """Stops listening: new connections are refused (RST), as when the server dies."""
        s, self.sock = self.sock, None
        s.shutdown(socket.SHUT_RDWR)  # wakes the accept() in serve()
        s.close()

    def serve(self, s):
        while True:
            try:
                conn, peer = s.accept()
            except OSError:
                return
            if peer[0] == CLIENT:
                with counts_lock:
                    self.accepted += 1
            threading.Thread(target=self.talk, args=(conn,), daemon=True).start()

    def talk(self, conn):
        conn.settimeout(10)
        try:
            conn.sendall(f"220 {self.name} ESMTP\r\n".encode())
            buf = b""
            while True:
                data = conn.recv(1024)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    cmd = line.strip().upper()
                    if cmd.startswith((b"EHLO", b"HELO")):
                        conn.sendall(f"250 {self.name}\r\n".encode())
                    elif cmd == b"QUIT":
                        conn.sendall(b"221 bye\r\n")
                        return
                    else:
                        conn.sendall(b"502 not implemented\r\n")
        except OSError:
            pass
        finally:
            conn.close()


backends = {f"be{i}": Backend(i) for i in range(1, BACKENDS + 1)}


def connect(n):
    """n new connections from the client to VIP:25, one after another: who greeted, and
    how many each backend accepted from the client (both sides of the count)."""
    before = {name: b.accepted for name, b in backends.items()}
    answers, failures = {}, []
    for _ in range(n):
        s = socket_in("client")
        s.settimeout(5)
        try:
            s.connect((VIP, 25))
            line = b""
            while b"\n" not in line:
                chunk = s.recv(256)
                if not chunk:
                    break
                line += chunk
            text = line.decode("latin1").strip()
            if text.startswith("220 "):
                answers[text.split()[1]] = answers.get(text.split()[1], 0) + 1
                s.sendall(b"QUIT\r\n")
            else:
                failures.append(f"BAD {text[:40]}")
        except ConnectionRefusedError:
            failures.append("ECONNREFUSED")
        except OSError as e:
            failures.append(type(e).__name__)
        finally:
            s.close()
    # The backend thread counts after accept(); the greeting came after it, so all are in.
    accepted = {name: b.accepted - before[name] for name, b in backends.items() if b.accepted != before[name]}
    return {"answers": answers, "failures": failures, "accepted": accepted}


# --- condition files -------------------------------------------------------------------


def cond_path(name):
    return f"/proc/thread-self/net/nf_condition/{name}"


def cond_read(name):
    enter("lb")
    try:
        with open(cond_path(name)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None
    finally:
        enter(None)


def cond_write(name, value):
    enter("lb")
    try:
        fd = os.open(cond_path(name), os.O_WRONLY)
        try:
            os.write(fd, f"{value}\n".encode())
        finally:
            os.close(fd)
    finally:
        enter(None)


def cond_list():
    enter("lb")
    try:
        return {n: open(cond_path(n)).read().strip() for n in sorted(os.listdir(cond_path("")))}
    except FileNotFoundError:
        return {}
    finally:
        enter(None)


def cond_stat(name):
    enter("lb")
    try:
        st = os.stat(cond_path(name))
        return {"mode": oct(st.st_mode & 0o7777), "uid": st.st_uid, "gid": st.st_gid}
    finally:
        enter(None)


def wait_until(what, read, accept, timeout=30.0):
    """Polls read() every 50 ms until accept(value); returns (value, seconds)."""
    start = time.monotonic()
    while True:
        value = read()
        if accept(value):
            return value, round(time.monotonic() - start, 3)
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: still {value!r} after {timeout}s")
        time.sleep(0.05)


def wait_cond(name, value, timeout=30.0):
    return wait_until(f"condition {name}", lambda: cond_read(name), lambda v: v == value, timeout)[1]


# --- rules -----------------------------------------------------------------------------


def load_rules(path):
    with open(path) as f:
        lb("iptables-legacy-restore", input=f.read())


def flush_rules():
    for table in ("mangle", "nat"):
        lb("iptables-legacy", "-t", table, "-F")
        lb("iptables-legacy", "-t", table, "-X")


def saved_rules():
    """iptables-legacy-save -c with the packet counters, without the comment and date lines."""
    return [l for l in lb("iptables-legacy-save", "-c").splitlines() if not l.startswith("#")]


# --- the daemon ------------------------------------------------------------------------


class Daemon:
    """`nf-healthd run` in the balancer's namespace, as root or as USER with CAP_NET_ADMIN only."""

    def __init__(self, config, unprivileged=False):
        argv = ["ip", "netns", "exec", "lb"]
        if unprivileged:
            caps = "-all,+net_admin"
            argv += ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups",
                     f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set={caps}"]
        argv += [NODE, BIN, "run", "-c", f"{RUN}/{config}"]
        self.started = time.monotonic()
        self.lines = []
        self.stderr = []
        self.changed = threading.Condition()
        # ip netns exec and setpriv exec: this pid ends up being node's.
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self.read, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self.read, args=(self.proc.stderr, self.stderr), daemon=True).start()

    def read(self, stream, into):
        for text in stream:
            try:
                line = json.loads(text)
            except ValueError:
                line = {"msg": text.rstrip("\n")}
            with self.changed:
                into.append(line)
                self.changed.notify_all()

    def mark(self):
        with self.changed:
            return len(self.lines)

    def wait_for(self, what, match, since=0, timeout=180.0):
        # Wide: node alone takes 11 s to start under emulation on a quiet machine, 45 s on a busy one.
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines[since:]:
                    if match(line):
                        return line
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the daemon exited ({self.proc.returncode}) before {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no daemon log line for {what} within {timeout}s")
                self.changed.wait(min(left, 0.5))

    def tail(self):
        return [l.get("msg", l) for l in self.lines[-15:]] + [l.get("msg", l) for l in self.stderr[-10:]]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def event(name, **fields):
    return lambda l: l.get("event") == name and all(l.get(k) == v for k, v in fields.items())


# --- the steps -------------------------------------------------------------------------

daemon = None


def step(name, fn):
    global daemon
    start = time.monotonic()
    log(f"step {name}")
    try:
        data = fn() or {}
        emit(name, ok=True, ms=round((time.monotonic() - start) * 1000), **data)
    except Exception:
        emit(name, ok=False, ms=round((time.monotonic() - start) * 1000),
             error=traceback.format_exc(), log=daemon.tail() if daemon else [])
        log(traceback.format_exc())


def setup():
    sh("modprobe", "xt_condition")
    build_lab()
    for b in backends.values():
        b.start()
    params = {}
    for p in sorted(os.listdir("/sys/module/xt_condition/parameters")):
        with open(f"/sys/module/xt_condition/parameters/{p}") as f:
            params[p] = f.read().strip()
    return {"kernel": os.uname().release, "moduleParameters": params,
            "module": sh("modinfo", "-F", "filename", "xt_condition").strip()}


def rules(file, n, hand=None):
    def run():
        load_rules(f"{RUN}/{file}")
        loaded = cond_list()
        for name, value in (hand or {}).items():
            cond_write(name, value)
        counted = connect(n)
        return {"conditions": loaded, "hand": hand or {}, **counted, "saved": saved_rules()}
    return run


def daemon_start():
    global daemon
    load_rules(f"{RUN}/rules-2.v4")
    daemon = Daemon("config-2.yaml")
    ready = daemon.wait_for("ready", event("ready"))
    return {"readyMs": round((time.monotonic() - daemon.started) * 1000), "summary": ready.get("summary"),
            "conditions": cond_list()}


def daemon_split():
    return connect(20)


def flip(n, server, down):
    """Stops (down) or starts backend N's server, waits for the daemon's transition and
    the file it writes, then counts 20 new connections."""
    def run():
        backend, state, value = f"mail{n}", "down" if down else "up", "1" if down else "0"
        at = daemon.mark()
        start = time.monotonic()
        (backends[server].stop if down else backends[server].start)()
        line = daemon.wait_for(f"{backend} {state}", event("transition", backend=backend, state=state), at)
        wait_cond(f"{backend}up", value)
        return {"fileMs": round((time.monotonic() - start) * 1000), "transition": line.get("msg"),
                "conditions": cond_list(), **connect(20), "saved": saved_rules()}
    return run


def daemon_drift():
    at = daemon.mark()
    start = time.monotonic()
    cond_write("mail1up", "1")
    written = cond_read("mail1up")
    repaired = daemon.wait_for("drift repaired", event("drift_repaired"), at)
    wait_cond("mail1up", "0")
    return {"written": written, "repairMs": round((time.monotonic() - start) * 1000),
            "log": repaired.get("msg"), "conditions": cond_list()}


def daemon_reload():
    """Rules flushed under the running daemon, then loaded again while it is stopped
    (SIGSTOP) so the fresh files can be read before it acts."""
    backends["be2"].stop()
    daemon.wait_for("mail2 down", event("transition", backend="mail2", state="down"))
    wait_cond("mail2up", "1")
    before = cond_list()
    at = daemon.mark()
    flush_rules()
    gone = cond_list()
    failed = daemon.wait_for("write failed", event("write_failed"), at)
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        load_rules(f"{RUN}/rules-2.v4")
        reloaded = cond_list()
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    start = time.monotonic()
    wait_cond("mail2up", "1")
    back_ms = round((time.monotonic() - start) * 1000)
    recovered = daemon.wait_for("write recovered", event("write_recovered"), at)
    counted = connect(10)
    at = daemon.mark()
    backends["be2"].start()
    daemon.wait_for("mail2 up", event("transition", backend="mail2", state="up"), at)
    wait_cond("mail2up", "0")
    return {"before": before, "flushed": gone, "failed": failed.get("msg"), "reloaded": reloaded,
            "repairMs": back_ms, "recovered": recovered.get("msg"), "after": cond_list(), **counted}


def daemon_stop():
    global daemon
    d, daemon = daemon, None
    if d is None:
        raise RuntimeError("no daemon running (an earlier step failed)")
    return {"exitCode": d.stop(), "errors": [l.get("msg") for l in d.lines if l.get("level") in ("error", "fatal")]}


def initial_kernel():
    """The files say mail2 is down (written by hand, its server is up): the daemon adopts that."""
    global daemon
    cond_write("mail2up", "1")
    held = cond_list()
    daemon = Daemon("config-2-kernel.yaml")
    try:
        ready = daemon.wait_for("ready", event("ready"))
        at_ready = cond_list()
        up = daemon.wait_for("mail2 up", event("transition", backend="mail2", state="up"))
        wait_cond("mail2up", "0")
        return {"held": held, "summary": ready.get("summary"), "atReady": at_ready, "transition": up,
                "after": cond_list(), "exitCode": daemon.stop()}
    finally:
        daemon.stop()
        daemon = None


def unprivileged(allowed):
    def run():
        global daemon
        os.makedirs("/tmp/nfh-user", exist_ok=True)
        os.chown("/tmp/nfh-user", USER, USER)
        if allowed:
            # New module parameters apply from the next load of the module, to files made after it.
            flush_rules()
            sh("rmmod", "xt_condition")
            sh("modprobe", "xt_condition", f"condition_gid_perms={USER}", "condition_list_perms=0664")
            load_rules(f"{NFH}/vm/recipe.rules")
        # Both held down by hand: the daemon (initialState up) has to write both.
        for name in ("mail1up", "mail2up"):
            cond_write(name, "1")
        files = {name: cond_stat(name) for name in ("mail1up", "mail2up")}
        try:
            os.remove("/tmp/nfh-user/state.json")
        except FileNotFoundError:
            pass
        daemon = Daemon("config-2-user.yaml", unprivileged=True)
        # Once it logs, ip netns exec and setpriv have exec'd node: read who it runs as.
        daemon.wait_for("starting", event("starting"))
        with open(f"/proc/{daemon.proc.pid}/status") as f:
            status = dict(l.split(":\t", 1) for l in f.read().splitlines() if ":\t" in l)
        identity = {k: status.get(k, "").strip() for k in ("Name", "Uid", "Gid", "Groups", "CapEff", "CapPrm", "CapBnd", "CapAmb")}
        if not allowed:
            try:
                failed = daemon.wait_for("write failed", event("write_failed"))
                return {"files": files, "identity": identity, "failed": failed, "conditions": cond_list()}
            finally:
                daemon.stop()
                daemon = None
        ready = daemon.wait_for("ready", event("ready"))
        wait_cond("mail1up", "0")
        wait_cond("mail2up", "0")
        return {"files": files, "identity": identity, "summary": ready.get("summary"), "conditions": cond_list(),
                "errors": [l.get("msg") for l in daemon.lines if l.get("level") == "error"]}
    return run


def recipe_split():
    return {**connect(40), "saved": saved_rules()}


def main():
    emit("boot", uptime=float(open("/proc/uptime").read().split()[0]))
    step("setup", setup)
    step("rules-2", rules("rules-2.v4", 40))
    step("rules-4", rules("rules-4.v4", 40))
    step("rules-4-web2-down", rules("rules-4.v4", 40, {"web2": 1}))
    step("daemon-start", daemon_start)
    step("daemon-split", daemon_split)
    step("daemon-failover", flip(2, "be2", down=True))
    step("daemon-recovery", flip(2, "be2", down=False))
    step("daemon-drift", daemon_drift)
    step("daemon-reload", daemon_reload)
    step("daemon-stop", daemon_stop)
    step("initial-kernel", initial_kernel)
    step("unprivileged-denied", unprivileged(False))
    step("unprivileged-allowed", unprivileged(True))
    step("recipe-split", recipe_split)
    step("recipe-failover", flip(1, "be1", down=True))
    step("recipe-recovery", flip(1, "be1", down=False))
    step("recipe-stop", daemon_stop)
    emit("done", ok=True)


if __name__ == "__main__":
    try:
        main()
    except Exception:
        emit("crash", ok=False, error=traceback.format_exc())
    finally:
        if daemon:
            daemon.stop()
