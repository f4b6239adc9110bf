"""Turns bench/run.sh's results.jsonl into the Markdown report: prints it and
rewrites docs/benchmarks.md (latest report + a short history of one-line
summaries). Usage: report.py RESULTS DOC key=value..."""
import datetime
import json
import os
import platform
import subprocess
import sys

res = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
doc = sys.argv[2]
m = dict(a.split("=", 1) for a in sys.argv[3:])
conc, dur, keys, scale_keys, bigc, idle = (int(m[k]) for k in ("conc", "dur", "keys", "scale_keys", "bigc", "idle"))

H2, H1, REDIS = "kvconnectd h2 (h2load)", "kvconnectd h1 (wrk)", "redis (redis-benchmark)"
DENO_R, DENO_L = "Deno CLI → kvconnectd (h2)", "Deno local KV (in-process)"


def find(kind, **kw):
    for r in res:
        if r.get("kind") == kind and all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def main_cell(peer, wl):
    if peer == REDIS:
        r = {"read": find("main", peer=REDIS, workload="get"), "write": find("main", peer=REDIS, workload="set")}.get(wl)
    elif peer in (DENO_R, DENO_L):
        op = {"read": "get", "write": "set"}.get(wl, wl)
        r = find("deno", workload=op, target="kvconnectd" if peer == DENO_R else "deno-local")
    else:
        r = find("main", peer=peer, workload=wl)
    return r


def fmt(r, extra=True):
    if not r:
        return "–"
    s = f"{r['ops_per_s']:,} ops/s<br>p50 {r['p50_ms']:.2f} / p99 {r['p99_ms']:.2f} ms"
    if extra and r.get("cas_writes"):
        s += f"<br>{r['cas_commits_per_s']:,} commits/s, conflicts {100 * r['cas_conflicts'] / r['cas_writes']:.0f} %"
    if r.get("errors"):
        s += f"<br>**{r['errors']} errors**"
    return s


def ops(r):
    return r["ops_per_s"] if r and r.get("ops_per_s") else None


def ratio(a, b):
    a, b = ops(a), ops(b)
    return a / b if a and b else None


def rs(x):
    return f"{x:.2f}" if x is not None else "–"


def queue_block():
    """The "### Queues" part (rows of bench/run.sh's queue section), or []."""
    push, lag, pull, local = (find("queue", workload=w) for w in ("push", "lag", "pull", "deno-local"))
    if not any((push, lag, pull, local)):
        return []
    Q = ["### Queues\n"]
    per = lambda r: f"{r['perSecond']:,} messages/s" if r and r.get("perSecond") else "–"
    Q.append("| measure | kvconnectd | Deno's own queue (`Deno.openKv(file)`, in-process) |\n|---|---|---|")
    if push:
        Q.append(f"| webhook push to a local receiver ({push['messages']:,} messages due at once, 32 in flight, libcurl) | "
                 f"{per(push)} ({push['delivered']:,} delivered in {push['seconds']:.2f} s) | – |")
    if pull or local:
        Q.append(f"| pull through `clients/deno/queue.ts`, 8 handlers: leased and acknowledged | "
                 f"{per(pull)} | {per(local)} (`enqueue` + `listenQueue`) |")
    if lag:
        Q.append(f"| deadline → webhook delivery ({lag['messages']:,} messages over 5 s) | "
                 f"p50 {lag['p50Ms']} / p99 {lag['p99Ms']} / max {lag['maxMs']} ms | – |")
    Q.append("\n| queue target | measured | |\n|---|---|---|")
    def qt(name, value, ok):
        Q.append(f"| {name} | {value} | {'met' if ok else ('**missed**' if ok is not None else 'not measured')} |")
    pv = lambda r: r.get("perSecond") if r else None
    qt("webhook push ≥ 5,000 deliveries/s", per(push), None if not pv(push) else pv(push) >= 5000)
    qt("pull via the module, 8 handlers ≥ 5,000 messages/s", per(pull), None if not pv(pull) else pv(pull) >= 5000)
    qt("deadline → delivery p99 ≤ 10 ms", f"{lag['p99Ms']} ms" if lag else "–", None if not lag else lag["p99Ms"] <= 10)
    qt("pull via the module ≥ Deno's own local queue", f"{rs(pv(pull) / pv(local)) if pv(pull) and pv(local) else '–'} ×",
       None if not (pv(pull) and pv(local)) else pv(pull) >= pv(local))
    return Q


L = []
now = datetime.datetime.now(datetime.timezone.utc)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
try:
    fs = subprocess.run(["df", "-T", "."], capture_output=True, text=True).stdout.splitlines()[1].split()[1]
except Exception:
    fs = "?"
if m.get("only") == "queue":
    # Just the queue section: replace the "### Queues" block of the latest
    # report (or add it), keep everything else.
    Q = queue_block()
    Q.insert(1, f"Run {now:%Y-%m-%d %H:%M} UTC, `{m['cmd']}` (queue section only), load average "
                f"{m['load_start']} at start, {m['load_end']} at end, {m['seconds']} s.\n")
    block = "\n".join(Q) + "\n"
    print(block)
    old = open(doc).read()
    head, sep, hist = old.partition("\n## History")
    if "### Queues" in head:
        before, _, after = head.partition("### Queues")
        nxt = after.find("\n### ")
        head = before + block.rstrip("\n") + ("\n" + after[nxt:] if nxt >= 0 else "\n")
    else:
        head = head.rstrip("\n") + "\n\n" + block
    open(doc, "w").write(head.rstrip("\n") + "\n" + sep + hist)
    sys.exit(0)
deno_v = subprocess.run([".venv/bin/deno", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2].replace("v=", "")
L.append(f"Run {now:%Y-%m-%d %H:%M} UTC · {os.cpu_count()} cores ({cpu}) · Linux {platform.release()} · "
         f"filesystem {fs} (all peers on the same disk) · load average {m['load_start']} at start, {m['load_end']} at end · "
         f"{m['seconds']} s in all.\n")
L.append(f"Command: `{m['cmd']}` (CONNECTIONS={conc} DURATION={dur} KEYS={keys} SCALE_KEYS={scale_keys} "
         f"BIG_CONNECTIONS={bigc} IDLE_CONNECTIONS={idle} THREADS={m['threads']}). Release build, "
         f"`synchronous=FULL`; Redis {redis_v} `appendonly yes`, `appendfsync always`; {deno_v}. "
         f"Load generators share the cores with the servers.\n")

L.append(f"### Workloads, {conc} connections, 100-byte values, {keys:,} keys\n")
peers = [H2, H1, DENO_R, DENO_L, REDIS]
L.append("| workload | " + " | ".join(peers) + " |")
L.append("|---|" + "---|" * len(peers))
names = {"read": "point read, random existing key", "write": "durable write, new key", "mixed": "mixed 90 % read / 10 % write",
         "list": "list 100 entries", "cas": "check-and-set, 16 hot keys"}
for wl in ("read", "write", "mixed", "list", "cas"):
    L.append(f"| {names[wl]} | " + " | ".join(fmt(main_cell(p, wl)) for p in peers) + " |")
L.append("\nRedis: GET/SET from `redis-benchmark -t get|set -d 100 -r KEYS`. h2load sends one fixed body per run "
         "(read: one key; write: `M_SET_SUFFIX_VERSIONSTAMPED_KEY`, so every request still creates a new key; "
         "list: one start key); wrk and Deno pick random keys per request. CAS ops count reads and commits; "
         "conflicts = commits refused by their check / commits sent.\n")

rg, rs_ = main_cell(REDIS, "read"), main_cell(REDIS, "write")
ratios = {
    "h2 read / Redis GET": ratio(main_cell(H2, "read"), rg),
    "h1 read / Redis GET": ratio(main_cell(H1, "read"), rg),
    "h2 write / Redis SET": ratio(main_cell(H2, "write"), rs_),
    "h1 write / Redis SET": ratio(main_cell(H1, "write"), rs_),
}
for wl, label in (("write", "set"), ("read", "get"), ("mixed", "mixed"), ("list", "list"), ("cas", "cas")):
    ratios[f"Deno via kvconnectd / Deno local, {label}"] = ratio(main_cell(DENO_R, wl), main_cell(DENO_L, wl))
L.append("| ratio | value |\n|---|---|")
for k, v in ratios.items():
    L.append(f"| {k} | {rs(v)} |")

seq = find("seqget")
if seq:
    L.append(f"\nSingle Deno client, sequential `kv.get` ({seq['n']}): p50 {seq['p50_ms']:.3f} ms, p99 {seq['p99_ms']:.3f} ms.")
w = find("watch")
if w:
    L.append(f"\nWatch, {w['changes']} changes, writer and watcher on separate connections: write→frame p50 "
             f"{w['write_to_frame_p50_ms']} ms, p99 {w['write_to_frame_p99_ms']} ms; ack→frame p50 "
             f"{w['ack_to_frame_p50_ms']} ms, p99 {w['ack_to_frame_p99_ms']} ms.")

# scaling
L.append("\n### Scaling (HTTP/1.1, wrk, random keys)\n")
L.append("| rows | read | write | read vs smallest | write vs smallest |\n|---|---|---|---|---|")
base = None
for n in (keys, scale_keys):
    r, wr = find("scale", keys=n, workload="read"), find("scale", keys=n, workload="write")
    db = find("dbsize", keys=n)
    pre = next((p for p in res if p.get("kind") == "preload" and p.get("keys") == n and p.get("preload") == "r"), None)
    if not r:
        continue
    if base is None:
        base = (r, wr)
    label = f"{n:,} keys (fresh db" + (f", {db['db_bytes'] / 2**20:.0f} MiB" if db else "") + \
            (f", preload {pre['keys_per_s']:,} keys/s" if pre and pre.get("keys_per_s") else "") + ")"
    L.append(f"| {label} | {fmt(r)} | {fmt(wr)} | {rs(ratio(r, base[0]))} | {rs(ratio(wr, base[1]))} |")
L.append("")
L.append("| value size | kvconnectd read | kvconnectd write | Redis GET | Redis SET | read / GET | write / SET |\n|---|---|---|---|---|---|---|")
rows = [(100, main_cell(H1, "read"), main_cell(H1, "write"), rg, rs_)]
for v in (4096, 65536):
    rows.append((v, find("value", value_bytes=v, peer=H1, workload="read"), find("value", value_bytes=v, peer=H1, workload="write"),
                 find("value", value_bytes=v, peer=REDIS, workload="get"), find("value", value_bytes=v, peer=REDIS, workload="set")))
for v, a, b, c, d in rows:
    if a or b:
        L.append(f"| {v:,} B | {fmt(a)} | {fmt(b)} | {fmt(c)} | {fmt(d)} | {rs(ratio(a, c))} | {rs(ratio(b, d))} |")
L.append("")
L.append(f"| connections | kvconnectd h1 read | kvconnectd h1 write | kvconnectd h2 read | Redis GET | Redis SET |\n|---|---|---|---|---|---|")
L.append(f"| {conc} | {fmt(main_cell(H1, 'read'))} | {fmt(main_cell(H1, 'write'))} | {fmt(main_cell(H2, 'read'))} | {fmt(rg)} | {fmt(rs_)} |")
if find("conns", workload="read"):
    L.append(f"| {bigc} | {fmt(find('conns', peer=H1, workload='read'))} | {fmt(find('conns', peer=H1, workload='write'))} | "
             f"{fmt(find('conns', peer=H2, workload='read'))} | {fmt(find('conns', peer=REDIS, workload='get'))} | "
             f"{fmt(find('conns', peer=REDIS, workload='set'))} |")

# memory
mib = lambda k: f"{int(k) / 1024:.1f} MiB"
L.append("\n### Daemon memory (RSS)\n")
L.append(f"- idle, fresh start: {mib(m['rss_idle'])}; at the end of the run: {mib(m['rss_after'])}")
for r in res:
    if r.get("kind") == "idle":
        L.append(f"- {r['opened']} idle keep-alive {'HTTP/1.1' if r['conn_kind'] == 'h1' else 'HTTP/2 (h2c)'} connections "
                 f"({r['held_after_2s']} still open after 2 s): {mib(r['rss_kib'])} (before: {mib(r['rss_before_kib'])})")
st = find("streams")
if st:
    L.append(f"- {st['streams']} open watch streams: {mib(st['rss_kib'])} (before: {mib(st['rss_before_kib'])})")
    a, b = find("streams-tp", workload="set"), find("streams-tp", workload="get")
    if a and b:
        L.append(f"- Deno CLI set/get with the streams open: {fmt(a, False)} / {fmt(b, False)} "
                 f"(without: {ops(main_cell(DENO_R, 'write')) or '–'} / {ops(main_cell(DENO_R, 'read')) or '–'} ops/s)".replace("<br>", ", "))

# PostgreSQL backend (section "pg" of run.sh)
PG1, PG2 = "kvconnectd PostgreSQL, 1 daemon (h2load)", "kvconnectd PostgreSQL, 2 daemons (h2load)"
pgw = find("pg-watch")
if find("pg", peer="pgbench -S") or find("pg", peer=PG1, workload="read"):
    L.append(f"\n### PostgreSQL backend, {conc} connections / clients, same cluster (fsync on)\n")
    L.append("| | point reads | durable writes |\n|---|---|---|")
    for label, peer in (("kvconnectd, PostgreSQL, 1 daemon (h2load)", PG1), ("kvconnectd, PostgreSQL, 2 daemons (h2load, half the connections each)", PG2),
                        ("kvconnectd, SQLite (h2load, above)", H2)):
        kind = "main" if peer == H2 else "pg"
        L.append(f"| {label} | {fmt(find(kind, peer=peer, workload='read'))} | {fmt(find(kind, peer=peer, workload='write'))} |")
    ps, pn = find("pg", peer="pgbench -S"), find("pg", peer="pgbench -N")
    tx = lambda r: f"{r['ops_per_s']:,} tx/s<br>avg {r['latency_avg_ms']:.2f} ms" if r else "–"
    L.append(f"| pgbench -S / -N (prepared, {conc} clients) | {tx(ps)} | {tx(pn)} |")
    if pgw:
        L.append(f"\nCross-daemon watch (write through one daemon, watch through the other, {pgw['changes']} changes): "
                 f"write → frame p50 {pgw['write_to_frame_p50_ms']:.2f} ms, p99 {pgw['write_to_frame_p99_ms']:.2f} ms.")

# targets
L.append("\n### Targets\n")
L.append("| target | measured | |\n|---|---|---|")
T = []
def target(name, value, ok):
    T.append((name, ok))
    L.append(f"| {name} | {value} | {'met' if ok else ('**missed**' if ok is not None else 'not measured')} |")
for k in ("h2 read / Redis GET", "h1 read / Redis GET"):
    v = ratios[k]; target(f"{k} ≥ 0.5", rs(v), None if v is None else v >= 0.5)
for k in ("h2 write / Redis SET", "h1 write / Redis SET"):
    v = ratios[k]; target(f"{k} ≥ 0.25", rs(v), None if v is None else v >= 0.25)
p99s = [(f"{p.split()[1]} {wl}", main_cell(p, wl)["p99_ms"]) for p in (H2, H1) for wl in names if main_cell(p, wl)]
if p99s:
    worst = max(p99s, key=lambda x: x[1])
    over = [n for n, v in p99s if v > 10]
    target(f"p99 ≤ 10 ms at {conc} connections (h2load/wrk workloads)", f"worst {worst[1]:.1f} ms ({worst[0]})"
           + (f"; over: {', '.join(over)}" if over else ""), not over)
if seq:
    target("single Deno client sequential kv.get p50 ≤ 0.5 ms", f"{seq['p50_ms']:.3f} ms", seq["p50_ms"] <= 0.5)
v = ratios["Deno via kvconnectd / Deno local, set"]; target("Deno via kvconnectd set ≥ 1.0 × Deno local", rs(v), None if v is None else v >= 1.0)
v = ratios["Deno via kvconnectd / Deno local, get"]; target("Deno via kvconnectd get ≥ 0.5 × Deno local", rs(v), None if v is None else v >= 0.5)
big = [(find("scale", keys=scale_keys, workload=w), find("scale", keys=keys, workload=w)) for w in ("read", "write")]
if all(a and b for a, b in big):
    rr, wr = ratio(*big[0]), ratio(*big[1])
    target(f"{scale_keys:,} keys ≥ 0.5 × the throughput of {keys:,}" + (" (issue: 10,000,000; run with SCALE_KEYS=10000000)" if scale_keys != 10_000_000 else ""),
           f"read {rs(rr)}, write {rs(wr)}", rr >= 0.5 and wr >= 0.5)
idl = [r for r in res if r.get("kind") == "idle"]
if idl:
    worst = max(idl, key=lambda r: r["rss_kib"])
    target(f"RSS ≤ 100 MiB with {idle} idle connections", ", ".join(f"{r['conn_kind']} {mib(r['rss_kib'])}" for r in idl),
           all(int(r["rss_kib"]) <= 100 * 1024 for r in idl))

best = lambda wl: max((ops(find("pg", peer=p, workload=wl)) or 0 for p in (PG1, PG2)), default=0) or None
if find("pg", peer="pgbench -S"):
    v = ratio({"ops_per_s": best("read")}, find("pg", peer="pgbench -S"))
    target("PostgreSQL point reads ≥ 0.5 × pgbench -S", rs(v), None if v is None else v >= 0.5)
    v = ratio({"ops_per_s": best("write")}, find("pg", peer="pgbench -N"))
    target("PostgreSQL durable writes ≥ 1.0 × pgbench -N", rs(v), None if v is None else v >= 1.0)
if pgw:
    target("cross-daemon watch p50 ≤ 5 ms, p99 ≤ 20 ms", f"p50 {pgw['write_to_frame_p50_ms']:.2f} ms, p99 {pgw['write_to_frame_p99_ms']:.2f} ms",
           pgw["write_to_frame_p50_ms"] <= 5 and pgw["write_to_frame_p99_ms"] <= 20)

L += [""] + queue_block()
table = "\n".join(L)
print(table)

met = sum(1 for _, ok in T if ok)
summary = (f"- {now:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load {m['load_start']}: "
           f"h2 read {ops(main_cell(H2, 'read')) or '–'}, h1 read {ops(main_cell(H1, 'read')) or '–'}, "
           f"Redis GET {ops(rg) or '–'}; h2 write {ops(main_cell(H2, 'write')) or '–'}, h1 write {ops(main_cell(H1, 'write')) or '–'}, "
           f"Redis SET {ops(rs_) or '–'} ops/s; Deno via kvconnectd / local: set {rs(ratios['Deno via kvconnectd / Deno local, set'])}, "
           f"get {rs(ratios['Deno via kvconnectd / Deno local, get'])}; targets met {met}/{len(T)}.")

old = open(doc).read() if os.path.exists(doc) else ""
history = old.split("## History", 1)[1].strip("\n") if "## History" in old else ""
prev = old.split("<!-- summary:", 1)[1].split("-->", 1)[0].strip() if "<!-- summary:" in old else ""
if prev:
    history = prev + ("\n" + history if history else "")
hist_lines = history.splitlines()
intro = old.split("## Latest", 1)[0] if "## Latest" in old else "# Benchmarks\n\n"
with open(doc, "w") as f:
    f.write(intro.rstrip("\n") + "\n\n## Latest\n\n<!-- summary: " + summary + " -->\n\n" + table +
            "\n\n## History\n\n" + "\n".join(hist_lines).strip("\n") + "\n")
