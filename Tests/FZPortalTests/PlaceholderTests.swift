import Testing
@testable import FZPortal
