import Testing
@testable import FZGateway
