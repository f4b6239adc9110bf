/// Where one HTTP/2 stream is in its life, as far as the front cares: the
/// request arriving, refused or handed to the handler, the response going
/// out. Transitions are pure (`on(_:)` returns the next state and what the
/// connection must do), so every event in every state is unit-tested
/// without sockets (HTTP2StreamStateTests).
///
/// nghttp2 enforces the protocol (no DATA before HEADERS, nothing after
/// END_STREAM), so an event a state does not expect changes nothing and
/// asks for nothing (`.none`).
enum HTTP2StreamState: Equatable {
    /// What the header block so far says about the request.
    enum HeaderBlock: Equatable {
        /// Within the limits: dispatched once complete.
        case accepted
        /// Content-Length over the body limit: answered 413 once the block is complete.
        case declaresTooLargeBody
        /// Over the header limit: fields dropped, answered 431 once the block is complete.
        case overLimit
    }

    /// HEADERS (and CONTINUATION) arriving.
    case receivingHeaders(HeaderBlock)
    /// Header block complete, body arriving; dispatched on END_STREAM.
    case receivingBody
    /// Request complete and handed to the handler; no response yet.
    case awaitingResponse
    /// Answered before the request was complete (408, 413, 431); the rest of
    /// the upload is discarded. `resetSent`: we sent RST_STREAM too.
    case answeredEarly(resetSent: Bool)
    /// Over the connection's request buffer budget: RST_STREAM
    /// (ENHANCE_YOUR_CALM) sent; never dispatched, never answered.
    case refused(headersComplete: Bool)
    /// Answered with the request complete; the response is going out.
    case responding
    /// Nothing more to do on this stream (reset by the peer, or request and
    /// response both complete); nghttp2 closes it.
    case closed(answered: Bool)

    enum Event: Equatable {
        /// A decoded header field; `overLimit`: the block's size (RFC 9113
        /// accounting) is now over `maxHeaderBytes`.
        case headerField(overLimit: Bool)
        /// A content-length header over `maxBodyBytes`.
        case declaredBodyTooLarge
        /// The request's header block is complete (END_HEADERS).
        case headerBlockComplete
        /// A DATA chunk; `overBodyLimit`: the body would exceed `maxBodyBytes`.
        case data(overBodyLimit: Bool)
        /// END_STREAM from the client.
        case endStream
        /// Storing more of this request would exceed the connection's budget.
        case bufferBudgetExceeded
        /// The discarded upload of an early-answered request passed the cap.
        case discardLimitExceeded
        /// The request timeout passed while the request was still arriving.
        case deadline
        /// The handler's response is being submitted.
        case responseStarted
        /// The response's last byte went to nghttp2 (END_STREAM).
        case responseEnded
        /// RST_STREAM from the client.
        case resetByPeer
    }

    /// Why a request is answered before it reached the handler.
    enum EarlyAnswer: Equatable {
        /// 408: not complete within the request timeout.
        case timedOut
        /// 413: body over `maxBodyBytes`.
        case bodyTooLarge
        /// 431: header block over `maxHeaderBytes`.
        case headersTooLarge
    }

    /// RST_STREAM error codes we send.
    enum ResetCode: Equatable {
        /// Answered, but the client keeps uploading past the request timeout.
        case cancel
        /// Answered, but the discarded upload passed the cap.
        case noError
    }

    enum Action: Equatable {
        case none
        /// Keep the header field (counted in the connection's budget).
        case storeHeader
        /// Forget the stored header fields (and their share of the budget).
        case dropHeaders
        /// Keep the DATA chunk (counted in the connection's budget).
        case storeData
        /// Count the DATA chunk towards the discard cap, keep nothing.
        case discardData
        /// Hand the complete request to the handler.
        case dispatch
        /// Forget the buffered request and answer it now.
        case answer(EarlyAnswer)
        /// Submit the handler's response.
        case sendResponse
        /// Submit RST_STREAM.
        case reset(ResetCode)
        /// Forget the buffered request and submit RST_STREAM(ENHANCE_YOUR_CALM).
        case refuse
        /// An unanswered stream was reset by the client (rapid-reset guard).
        case countEarlyReset
        /// A header block stalled past the request timeout blocks the whole
        /// connection (CONTINUATION must follow at once): end it.
        case closeConnection
    }

    /// Answered (early or by the handler): no longer counted as waiting.
    var isAnswered: Bool {
        switch self {
        case .answeredEarly, .responding, .closed(answered: true): return true
        default: return false
        }
    }

    /// The next state and what to do, for `event` in this state.
    func on(_ event: Event) -> (HTTP2StreamState, Action) {
        switch (self, event) {
        // Header fields. Trailers (after the body) are stored like headers;
        // trailers over the limit drop every stored field.
        case (.receivingHeaders(.overLimit), .headerField):
            return (self, .none)
        case (.receivingHeaders, .headerField(overLimit: true)):
            return (.receivingHeaders(.overLimit), .dropHeaders)
        case (.receivingHeaders, .headerField(overLimit: false)):
            return (self, .storeHeader)
        case (.receivingBody, .headerField(overLimit: true)):
            return (self, .dropHeaders)
        case (.receivingBody, .headerField(overLimit: false)):
            return (self, .storeHeader)
        case (.receivingHeaders(.accepted), .declaredBodyTooLarge):
            return (.receivingHeaders(.declaresTooLargeBody), .none)

        // The header block is complete.
        case (.receivingHeaders(.accepted), .headerBlockComplete):
            return (.receivingBody, .none)
        case (.receivingHeaders(.declaresTooLargeBody), .headerBlockComplete):
            return (.answeredEarly(resetSent: false), .answer(.bodyTooLarge))
        case (.receivingHeaders(.overLimit), .headerBlockComplete):
            return (.answeredEarly(resetSent: false), .answer(.headersTooLarge))
        case (.refused(headersComplete: false), .headerBlockComplete):
            return (.refused(headersComplete: true), .none)

        // Body.
        case (.receivingBody, .data(overBodyLimit: true)):
            return (.answeredEarly(resetSent: false), .answer(.bodyTooLarge))
        case (.receivingBody, .data(overBodyLimit: false)):
            return (self, .storeData)
        case (.answeredEarly, .data), (.refused, .data):
            // Discarded rather than reset at once: curl < 8.x reports
            // RST_STREAM(NO_ERROR) as a failure even after a complete response.
            return (self, .discardData)
        case (.answeredEarly(resetSent: false), .discardLimitExceeded):
            return (.answeredEarly(resetSent: true), .reset(.noError))

        // Too much buffered on the connection: refuse this stream.
        case (.receivingHeaders, .bufferBudgetExceeded):
            return (.refused(headersComplete: false), .refuse)
        case (.receivingBody, .bufferBudgetExceeded):
            return (.refused(headersComplete: true), .refuse)

        // END_STREAM.
        case (.receivingBody, .endStream):
            return (.awaitingResponse, .dispatch)
        case (.answeredEarly, .endStream):
            return (.responding, .none)
        case (.refused(headersComplete: true), .endStream):
            return (.closed(answered: false), .none)

        // The request timeout passed while the request was still arriving.
        case (.receivingHeaders, .deadline), (.refused(headersComplete: false), .deadline):
            return (self, .closeConnection)
        case (.receivingBody, .deadline):
            return (.answeredEarly(resetSent: false), .answer(.timedOut))
        case (.answeredEarly(resetSent: false), .deadline):
            // Answered but the client still does not end its upload: stop it.
            return (.answeredEarly(resetSent: true), .reset(.cancel))

        // The handler's response.
        case (.awaitingResponse, .responseStarted):
            return (.responding, .sendResponse)
        case (.responding, .responseEnded):
            return (.closed(answered: true), .none)

        // The client reset the stream (nghttp2 closes it right after).
        case (.closed, .resetByPeer):
            return (self, .none)
        case (_, .resetByPeer):
            return (.closed(answered: isAnswered), isAnswered ? .none : .countEarlyReset)

        default:
            return (self, .none)
        }
    }

    /// Applies `event` and returns what to do.
    mutating func apply(_ event: Event) -> Action {
        let (next, action) = on(event)
        self = next
        return action
    }
}
