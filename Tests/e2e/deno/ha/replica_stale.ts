// The replica handle (Deno.openKv(base + "/replica")) against a standby whose
// replay the caller pauses: args = base URL, then the command that pauses replay.
const [base, ...pauseCmd] = Deno.args;
const kv = await Deno.openKv(base);
const rep = await Deno.openKv(base + "/replica");
const out: Record<string, unknown> = {};
const v1 = await kv.set(["ha", "k"], "v1");
// Wait for the standby to replay v1.
for (let i = 0; i < 100; i++) {
  const e = await rep.get(["ha", "k"], { consistency: "eventual" });
  if (e.value === "v1") break;
  await new Promise((r) => setTimeout(r, 50));
}
out.replicaBefore = (await rep.get(["ha", "k"], { consistency: "eventual" })).value;
try {
  await rep.get(["ha", "k"]);
  out.strongOnReplica = "allowed";
} catch (e) {
  out.strongOnReplica = String(e);
}
const p = await new Deno.Command(pauseCmd[0], { args: pauseCmd.slice(1) }).output();
out.pauseExit = p.code;
const v2 = await kv.set(["ha", "k"], "v2");
await new Promise((r) => setTimeout(r, 700));
const stale = await rep.get(["ha", "k"], { consistency: "eventual" });
out.replicaWhilePaused = stale.value;
out.replicaVersionstamp = stale.versionstamp === v1.versionstamp ? "v1" : stale.versionstamp;
out.primaryWhilePaused = (await kv.get(["ha", "k"])).value;
out.primaryEventual = (await kv.get(["ha", "k"], { consistency: "eventual" })).value;
// Writes and watches through the replica handle go to the primary.
const w = await rep.set(["ha", "via-replica"], "w");
out.writeViaReplicaOk = w.ok;
out.writeViaReplicaSeenOnPrimary = (await kv.get(["ha", "via-replica"])).value;
const stream = rep.watch([["ha", "k"]]);
const reader = stream.getReader();
const first = await reader.read();
out.watchViaReplica = first.value?.[0]?.value;
await reader.cancel();
out.v2ok = v2.ok;
console.log(JSON.stringify(out));
kv.close();
rep.close();
