import XCTest
@testable import KVConnect
final class KVConnectPlaceholderTests: XCTestCase { func testPlaceholder() {} }
