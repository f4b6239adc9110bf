import XCTest

@testable import HTTPFront

/// The HTTP/2 stream state machine without sockets: every event in every
/// state. The legal transitions are listed one by one; every other pair
/// must leave the state alone and ask for nothing.
final class HTTP2StreamStateTests: XCTestCase {
    typealias State = HTTP2StreamState
    typealias Event = HTTP2StreamState.Event
    typealias Action = HTTP2StreamState.Action

    static let allStates: [State] = [
        .receivingHeaders(.accepted), .receivingHeaders(.declaresTooLargeBody), .receivingHeaders(.overLimit),
        .receivingBody, .awaitingResponse,
        .answeredEarly(resetSent: false), .answeredEarly(resetSent: true),
        .refused(headersComplete: false), .refused(headersComplete: true),
        .responding, .closed(answered: false), .closed(answered: true)
    ]

    static let allEvents: [Event] = [
        .headerField(overLimit: false), .headerField(overLimit: true), .declaredBodyTooLarge,
        .headerBlockComplete, .data(overBodyLimit: false), .data(overBodyLimit: true), .endStream,
        .bufferBudgetExceeded, .discardLimitExceeded, .deadline, .responseStarted, .responseEnded, .resetByPeer
    ]

    struct Transition {
        let from: State
        let event: Event
        let to: State
        let action: Action
    }

    /// Every transition that changes the state or asks for an action.
    static let legal: [Transition] = {
        var t: [Transition] = []
        func add(_ from: State, _ event: Event, _ to: State, _ action: Action) {
            t.append(Transition(from: from, event: event, to: to, action: action))
        }
        let accepted = State.receivingHeaders(.accepted)
        let bigBody = State.receivingHeaders(.declaresTooLargeBody)
        let bigHeaders = State.receivingHeaders(.overLimit)
        let answered = State.answeredEarly(resetSent: false)
        let answeredReset = State.answeredEarly(resetSent: true)
        let refusedInHeaders = State.refused(headersComplete: false)
        let refused = State.refused(headersComplete: true)

        // Header fields: stored within the limit; the first field over it
        // drops what was stored and makes the block a 431.
        for s in [accepted, bigBody] {
            add(s, .headerField(overLimit: false), s, .storeHeader)
            add(s, .headerField(overLimit: true), bigHeaders, .dropHeaders)
        }
        add(.receivingBody, .headerField(overLimit: false), .receivingBody, .storeHeader)
        add(.receivingBody, .headerField(overLimit: true), .receivingBody, .dropHeaders)
        add(accepted, .declaredBodyTooLarge, bigBody, .none)

        add(accepted, .headerBlockComplete, .receivingBody, .none)
        add(bigBody, .headerBlockComplete, answered, .answer(.bodyTooLarge))
        add(bigHeaders, .headerBlockComplete, answered, .answer(.headersTooLarge))
        add(refusedInHeaders, .headerBlockComplete, refused, .none)

        add(.receivingBody, .data(overBodyLimit: false), .receivingBody, .storeData)
        add(.receivingBody, .data(overBodyLimit: true), answered, .answer(.bodyTooLarge))
        for s in [answered, answeredReset, refusedInHeaders, refused] {
            add(s, .data(overBodyLimit: false), s, .discardData)
            add(s, .data(overBodyLimit: true), s, .discardData)
        }
        add(answered, .discardLimitExceeded, answeredReset, .reset(.noError))

        for s in [accepted, bigBody, bigHeaders] {
            add(s, .bufferBudgetExceeded, refusedInHeaders, .refuse)
        }
        add(.receivingBody, .bufferBudgetExceeded, refused, .refuse)

        add(.receivingBody, .endStream, .awaitingResponse, .dispatch)
        add(answered, .endStream, .responding, .none)
        add(answeredReset, .endStream, .responding, .none)
        add(refused, .endStream, .closed(answered: false), .none)

        for s in [accepted, bigBody, bigHeaders, refusedInHeaders] {
            add(s, .deadline, s, .closeConnection)
        }
        add(.receivingBody, .deadline, answered, .answer(.timedOut))
        add(answered, .deadline, answeredReset, .reset(.cancel))

        add(.awaitingResponse, .responseStarted, .responding, .sendResponse)
        add(.responding, .responseEnded, .closed(answered: true), .none)

        for s in [accepted, bigBody, bigHeaders, .receivingBody, .awaitingResponse, refusedInHeaders, refused] {
            add(s, .resetByPeer, .closed(answered: false), .countEarlyReset)
        }
        for s in [answered, answeredReset, .responding] {
            add(s, .resetByPeer, .closed(answered: true), .none)
        }
        return t
    }()

    func testEveryEventInEveryState() {
        var checked = 0
        for state in Self.allStates {
            for event in Self.allEvents {
                let (next, action) = state.on(event)
                let expected = Self.legal.first { $0.from == state && $0.event == event }
                if let expected {
                    XCTAssertEqual(next, expected.to, "\(state) + \(event)")
                    XCTAssertEqual(action, expected.action, "\(state) + \(event)")
                } else {
                    // Not expected here (nghttp2 enforces the protocol): ignored.
                    XCTAssertEqual(next, state, "\(state) + \(event) must be ignored")
                    XCTAssertEqual(action, .none, "\(state) + \(event) must be ignored")
                }
                checked += 1
            }
        }
        XCTAssertEqual(checked, Self.allStates.count * Self.allEvents.count)
    }

    func testLegalTableHasNoDuplicatesAndOnlyKnownStates() {
        for (i, t) in Self.legal.enumerated() {
            XCTAssertTrue(Self.allStates.contains(t.from), "\(t.from)")
            XCTAssertTrue(Self.allStates.contains(t.to), "\(t.to)")
            XCTAssertFalse(
                Self.legal[..<i].contains { $0.from == t.from && $0.event == t.event },
                "duplicate \(t.from) + \(t.event)")
        }
    }

    func testAnsweredStates() {
        let answered = Self.allStates.filter(\.isAnswered)
        XCTAssertEqual(
            answered,
            [
                .answeredEarly(resetSent: false), .answeredEarly(resetSent: true),
                .responding, .closed(answered: true)
            ])
    }

    /// A reset never changes whether the stream counts as answered, so the
    /// connection's count of unanswered streams stays exact at close.
    func testResetByPeerKeepsAnsweredness() {
        for state in Self.allStates {
            XCTAssertEqual(state.on(.resetByPeer).0.isAnswered, state.isAnswered, "\(state)")
        }
    }

    // Whole lives, as the connection drives them.

    private func run(_ events: [Event], from start: State = .receivingHeaders(.accepted)) -> (State, [Action]) {
        var state = start
        var actions: [Action] = []
        for e in events { actions.append(state.apply(e)) }
        return (state, actions)
    }

    func testOrdinaryRequest() {
        let (state, actions) = run([
            .headerField(overLimit: false), .headerField(overLimit: false), .headerBlockComplete,
            .data(overBodyLimit: false), .endStream, .responseStarted, .responseEnded
        ])
        XCTAssertEqual(actions, [.storeHeader, .storeHeader, .none, .storeData, .dispatch, .sendResponse, .none])
        XCTAssertEqual(state, .closed(answered: true))
    }

    func testDeclaredTooLargeBodyIsAnsweredBeforeTheBodyAndTheRestDiscarded() {
        let (state, actions) = run([
            .headerField(overLimit: false), .declaredBodyTooLarge, .headerField(overLimit: false),
            .headerBlockComplete, .data(overBodyLimit: false), .discardLimitExceeded, .data(overBodyLimit: false),
            .endStream
        ])
        XCTAssertEqual(
            actions,
            [
                .storeHeader, .none, .storeHeader, .answer(.bodyTooLarge), .discardData,
                .reset(.noError), .discardData, .none
            ])
        XCTAssertEqual(state, .responding)
    }

    func testSlowUploadGets408ThenReset() {
        let (state, actions) = run([.headerBlockComplete, .deadline, .deadline, .deadline])
        XCTAssertEqual(actions, [.none, .answer(.timedOut), .reset(.cancel), .none])
        XCTAssertEqual(state, .answeredEarly(resetSent: true))
    }

    func testOversizedHeaderBlockStoresNothingAfterTheLimitAndGets431() {
        let (state, actions) = run([
            .headerField(overLimit: false), .headerField(overLimit: true), .headerField(overLimit: true),
            .headerBlockComplete, .data(overBodyLimit: false), .endStream
        ])
        XCTAssertEqual(actions, [.storeHeader, .dropHeaders, .none, .answer(.headersTooLarge), .discardData, .none])
        XCTAssertEqual(state, .responding)
    }

    func testRefusedStreamIsNeverDispatchedNorAnswered() {
        let (state, actions) = run([
            .headerBlockComplete, .data(overBodyLimit: false), .bufferBudgetExceeded, .data(overBodyLimit: false),
            .discardLimitExceeded, .deadline, .endStream, .responseStarted
        ])
        XCTAssertEqual(actions, [.none, .storeData, .refuse, .discardData, .none, .none, .none, .none])
        XCTAssertEqual(state, .closed(answered: false))
        XCTAssertFalse(state.isAnswered)
    }

    func testResetBeforeTheAnswerIsAnEarlyReset() {
        XCTAssertEqual(run([.headerBlockComplete, .endStream, .resetByPeer]).1.last, .countEarlyReset)
        XCTAssertEqual(run([.headerBlockComplete, .endStream, .responseStarted, .resetByPeer]).1.last, Action.none)
    }

    func testResponseOnlyOnceAndOnlyAfterDispatch() {
        XCTAssertEqual(run([.responseStarted]).1, [.none])
        XCTAssertEqual(run([.headerBlockComplete, .endStream, .responseStarted, .responseStarted]).1.last, Action.none)
    }
}

/// The rapid-reset token bucket.
final class RapidResetGuardTests: XCTestCase {
    func testBurstThenRefillRate() {
        var guard_ = RapidResetGuard(burst: 3, perSecond: 10, nowMs: 1000)
        XCTAssertEqual((0..<4).map { _ in guard_.allowReset(nowMs: 1000) }, [true, true, true, false])
        // 10/s: one token per 100 ms.
        XCTAssertFalse(guard_.allowReset(nowMs: 1050))
        XCTAssertTrue(guard_.allowReset(nowMs: 1150))
        XCTAssertFalse(guard_.allowReset(nowMs: 1150))
    }

    func testRefillIsCappedAtTheBurst() {
        var guard_ = RapidResetGuard(burst: 2, perSecond: 1000, nowMs: 0)
        XCTAssertTrue(guard_.allowReset(nowMs: 0))
        XCTAssertTrue(guard_.allowReset(nowMs: 0))
        // An hour later still only the burst.
        XCTAssertEqual((0..<3).map { _ in guard_.allowReset(nowMs: 3_600_000) }, [true, true, false])
    }

    func testZeroBurstAndRateAllowNone() {
        var guard_ = RapidResetGuard(burst: 0, perSecond: 0, nowMs: 0)
        XCTAssertFalse(guard_.allowReset(nowMs: 0))
        XCTAssertFalse(guard_.allowReset(nowMs: 10_000))
    }
}
