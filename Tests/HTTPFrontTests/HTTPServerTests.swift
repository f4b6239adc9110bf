import XCTest
@testable import HTTPFront

