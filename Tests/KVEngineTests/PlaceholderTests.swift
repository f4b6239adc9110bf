import XCTest
@testable import KVEngine
final class KVEnginePlaceholderTests: XCTestCase { func testPlaceholder() {} }
