// `streams` watch streams of ONE key on one Deno.Kv handle. Prints
// {"phase":"ready"} once every stream got its initial frame, then records
// when each stream first sees value r (r = 1..rounds) and finally prints
// {"phase":"done","arrivals":[[ms, ...] per round]} (wall clock ms as
// performance.timeOrigin + performance.now(), comparable across processes
// on one machine). Exits 1 if a wait exceeds timeoutMs.
const [url, streamsText, key, roundsText, timeoutText] = Deno.args;
const streams = Number(streamsText), rounds = Number(roundsText);
const timeoutMs = Number(timeoutText ?? 60000);
const kv = await Deno.openKv(url);
const wall = () => performance.timeOrigin + performance.now();
const arrivals: number[][] = Array.from({ length: rounds }, () => []);
let initial = 0;
for (let s = 0; s < streams; s++) {
  (async () => {
    const reader = kv.watch([["fanout", key]]).getReader();
    let first = true, last = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      if (first) { first = false; initial++; }
      const v = value[0].value;
      if (typeof v === "number" && v > last) {
        const t = wall();
        // A frame may skip rounds (coalesced): it is the arrival of each.
        for (let r = last + 1; r <= Math.min(v, rounds); r++) arrivals[r - 1].push(t);
        last = v;
        if (last >= rounds) { await reader.cancel(); return; }
      }
    }
  })();
}
const deadline = performance.now() + timeoutMs;
const wait = async (cond: () => boolean, what: string) => {
  while (!cond()) {
    if (performance.now() > deadline) {
      console.log(JSON.stringify({ phase: what, timeout: true, initial, got: arrivals.map((a) => a.length) }));
      Deno.exit(1);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
};
await wait(() => initial === streams, "ready");
console.log(JSON.stringify({ phase: "ready", streams }));
await wait(() => arrivals[rounds - 1].length === streams, "done");
console.log(JSON.stringify({ phase: "done", arrivals }));
kv.close();
Deno.exit(0);
