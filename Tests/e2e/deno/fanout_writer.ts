// Sets ["fanout", key] to 1..rounds, one round per line read from stdin;
// prints {"round":r,"start":ms,"acked":ms} per write (wall clock ms, see
// watch_fanout.ts): start just before kv.set, acked when it resolved.
const [url, key, roundsText] = Deno.args;
const kv = await Deno.openKv(url);
const wall = () => performance.timeOrigin + performance.now();
await kv.get(["fanout", key]);   // connection and token ready before round 1
const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
let pending = "";
for (let r = 1; r <= Number(roundsText); r++) {
  while (!pending.includes("\n")) {
    const { value, done } = await lines.read();
    if (done) Deno.exit(1);
    pending += value;
  }
  pending = pending.slice(pending.indexOf("\n") + 1);
  const start = wall();
  await kv.set(["fanout", key], r);
  console.log(JSON.stringify({ round: r, start, acked: wall() }));
}
kv.close();
