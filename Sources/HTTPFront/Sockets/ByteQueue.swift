/// A FIFO of bytes with a read offset (compacted when half consumed).
struct ByteQueue {
    private var bytes: [UInt8] = []
    private var offset = 0

    var count: Int { bytes.count - offset }
    var isEmpty: Bool { count == 0 }

    mutating func append(_ data: UnsafeRawBufferPointer) {
        if offset > 0 && offset >= bytes.count / 2 {
            bytes.removeFirst(offset)
            offset = 0
        }
        bytes.append(contentsOf: data)
    }

    mutating func consume(_ n: Int) {
        offset += n
        if offset >= bytes.count {
            bytes.removeAll(keepingCapacity: true)
            offset = 0
        }
    }

    mutating func removeAll() {
        bytes = []
        offset = 0
    }

    func withFront<R>(_ body: (UnsafeRawPointer, Int) -> R) -> R {
        bytes.withUnsafeBytes { body($0.baseAddress! + offset, count) }
    }
}
