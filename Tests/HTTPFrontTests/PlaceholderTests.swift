import XCTest
@testable import HTTPFront
final class HTTPFrontPlaceholderTests: XCTestCase { func testPlaceholder() {} }
