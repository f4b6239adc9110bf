// A writer for the fault tests: until STOP_FILE exists, commits
// ["w", id, i] = i together with sum(["counter"], 1) and prints one JSON line
// per attempt: {i, ok, vs, t} (vs = versionstamp when acknowledged).
const [url, id, stopFile] = Deno.args;
const kv = await Deno.openKv(url);
let i = 0;
const exists = (p: string) => { try { Deno.statSync(p); return true; } catch { return false; } };
while (!exists(stopFile)) {
  i++;
  const t0 = Date.now();
  try {
    const r = await kv.atomic().set(["w", id, i], i).sum(["counter"], 1n).commit();
    console.log(JSON.stringify({ i, ok: r.ok, vs: r.ok ? r.versionstamp : null, t: Date.now(), t0 }));
  } catch (e) {
    console.log(JSON.stringify({ i, ok: false, err: String(e).slice(0, 200), t: Date.now(), t0 }));
    await new Promise((r) => setTimeout(r, 50));
  }
}
kv.close();
