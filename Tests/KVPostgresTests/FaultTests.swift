import Foundation
import XCTest
@testable import KVPostgres
import KVEngine

/// Lost connections and a stopped server: no acknowledged write is lost,
/// none is applied twice, and the store recovers by itself.
final class FaultTests: PGTestCase {
    /// The writer's server process is killed again and again while writes
    /// flow. Every write is answered; each acknowledged one is applied
    /// exactly once (the sum counts them), each failed one not at all.
    func testWriterBackendTerminatedDuringCommits() throws {
        let s = try open { $0.unavailableAfterMs = 10_000 }
        let killer = try admin()
        let acked = Locked<Set<Int>>([])
        let failed = Locked<[String]>([])
        let done = DispatchGroup()
        let stop = Locked(false)
        let kills = Locked(0)
        let killThread = Thread {
            while !stop.value {
                // Kill at a random moment, then let at least one batch commit
                // before the next kill (on a loaded machine, killing faster
                // than a reconnect takes would only measure starvation).
                usleep(UInt32.random(in: 2_000...20_000))
                let pid = s.writerBackendPID
                guard pid != 0 else { continue }
                let before = s.batchesCommitted
                defer {
                    let until = Date().addingTimeInterval(2)
                    while s.batchesCommitted == before && Date() < until && !stop.value { usleep(1_000) }
                }
                do {
                    if try killer.query("SELECT pg_terminate_backend($1::int4)", [.int8(Int64(pid))]).bool(0, 0) {
                        kills.with { $0 += 1 }
                    }
                } catch {
                    print("kill failed: \(error)")
                }
            }
        }
        killThread.start()
        var n = 0
        // Until the writer's backend was killed often enough (at least 1000 writes).
        while (kills.value < 20 || n < 1000) && n < 20_000 {
            let i = n
            n += 1
            done.enter()
            s.atomicWrite(
                AtomicWrite(mutations: [
                    Mutation(key: k("count"), kind: .sum(u64(1), min: nil, max: nil, clamp: false)),
                    set("w\(i)", bytesValue("\(i)"))
                ])
            ) { r in
                switch r {
                case .success(.committed): acked.with { _ = $0.insert(i) }
                case .success(let other): failed.with { $0.append("\(other)") }
                case .failure(let e): failed.with { $0.append("\(e)") }
                }
                done.leave()
            }
            if i % 10 == 0 { usleep(2_000) }
        }
        XCTAssertEqual(done.wait(timeout: .now() + 120), .success, "every write answered")
        stop.with { $0 = true }
        usleep(50_000)
        print(
            "PG fault: \(kills.value) writer backends terminated during \(n) writes; \(acked.value.count) acknowledged, "
                + "\(failed.value.count) failed; COMMITs with a lost answer: \(s.unknownOutcomes.committed) found committed, "
                + "\(s.unknownOutcomes.rolledBack) found rolled back")
        XCTAssertGreaterThanOrEqual(kills.value, 20)
        for e in failed.value { XCTAssertTrue(e.contains("unavailable"), e) }
        let count = readU64(try s.get("count")?.value) ?? 0
        XCTAssertEqual(
            count, UInt64(acked.value.count), "acknowledged writes applied exactly once, failed ones not at all")
        let present = try admin().query("SELECT count(*) FROM entries WHERE key <> $1", [.bytea(k("count"))]).int64(
            0, 0)
        XCTAssertEqual(present, Int64(acked.value.count))
        for i in acked.value.prefix(50) { XCTAssertNotNil(try s.get("w\(i)"), "acknowledged write \(i) lost") }
    }

    /// The answer to a COMMIT that took effect is lost: the writer finds the
    /// batch's commit marker after reconnecting and acknowledges it, without
    /// running it a second time.
    func testLostAnswerToASuccessfulCommitIsResolvedByTheMarker() throws {
        let s = try open()
        s.writer.loseNextCommitAnswer.withLock { $0 = true }
        let vs = try s.commit([Mutation(key: k("n"), kind: .sum(u64(1), min: nil, max: nil, clamp: false))])
        XCTAssertEqual(s.unknownOutcomes.committed, 1)
        XCTAssertEqual(s.unknownOutcomes.rolledBack, 0)
        XCTAssertEqual(try s.get("n"), KVEntry(key: k("n"), value: u64(1), versionstamp: vs), "applied exactly once")
        let vs2 = try s.commit([Mutation(key: k("n"), kind: .sum(u64(1), min: nil, max: nil, clamp: false))])
        XCTAssertEqual(readU64(try s.get("n")?.value), 2)
        XCTAssertTrue(vs.lexicographicallyPrecedes(vs2))
    }

    /// The server stops: writes fail with `.unavailable`, /readyz's probe is
    /// false; it starts again: the store reconnects without a restart, no
    /// acknowledged write is lost, watchers are woken (they re-read).
    func testServerStoppedAndRestarted() throws {
        guard let dir = ProcessInfo.processInfo.environment["KVCONNECTD_TEST_PG_DIR"] else {
            throw XCTSkip("KVCONNECTD_TEST_PG_DIR is not set: restart test skipped (make test sets it)")
        }
        let a = try open { $0.unavailableAfterMs = 1_000 }
        let b = try open { $0.unavailableAfterMs = 1_000 }
        let vs = try a.commit([set("before", bytesValue("1"))])
        let woken = Locked(0)
        let w = b.watch(keys: [k("watched")]) { woken.with { $0 += 1 } }
        defer { w.cancel() }

        try cluster("pause", dir)
        var resumed = false
        defer { if !resumed { try? cluster("resume", dir) } }
        let r = Box<Result<AtomicWriteResult, KVError>>()
        let t0 = Date()
        a.atomicWrite(AtomicWrite(mutations: [set("during", bytesValue("1"))])) { r.set($0) }
        guard case .failure(let e)? = r.wait(seconds: 30) else { return XCTFail("write while down did not fail") }
        XCTAssertTrue(e.isUnavailable, "\(e)")
        XCTAssertLessThan(Date().timeIntervalSince(t0), 10)
        XCTAssertThrowsError(try b.get("before")) { XCTAssertEqual(($0 as? KVError)?.isUnavailable, true, "\($0)") }
        XCTAssertFalse(a.checkWritable())

        try cluster("resume", dir)
        resumed = true
        let deadline = Date().addingTimeInterval(30)
        while !(a.checkWritable() && b.notificationsConnected && b.notificationReconnects > 0) && Date() < deadline {
            usleep(50_000)
        }
        XCTAssertTrue(a.checkWritable())
        XCTAssertEqual(try b.get("before")?.versionstamp, vs, "acknowledged before the stop: still there")
        XCTAssertNil(try b.get("during"), "failed while down: not applied")
        XCTAssertGreaterThan(woken.value, 0, "watchers re-woken after the notification channel came back")
        // Commits through A wake B's watchers again.
        let before = woken.value
        let vs2 = try a.commit([set("watched", bytesValue("2"))])
        let until = Date().addingTimeInterval(5)
        while woken.value == before && Date() < until { usleep(5_000) }
        XCTAssertGreaterThan(woken.value, before)
        XCTAssertTrue(vs.lexicographicallyPrecedes(vs2))
    }

    private func cluster(_ cmd: String, _ dir: String) throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/pg-test-cluster.sh").path
        // posix_spawn + waitpid: Foundation's Process can miss the exit when
        // the child leaves a daemon (the postmaster) behind.
        let words: [String] = ["/bin/bash", script, cmd, dir]
        let argv: [UnsafeMutablePointer<CChar>?] = words.map { w in strdup(w) }
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        XCTAssertEqual(posix_spawn(&pid, "/bin/bash", nil, nil, argv + [nil], environ), 0)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        XCTAssertEqual(status, 0, "pg-test-cluster.sh \(cmd)")
    }
}
