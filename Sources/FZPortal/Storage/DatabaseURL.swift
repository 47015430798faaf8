/// `--database-url`: `sqlite:///absolute/path.sqlite` (or `sqlite://relative/path`). PostgreSQL
/// URLs are recognised and refused until a `PortalStore` for it exists.
enum DatabaseURL: Equatable {
    case sqlite(path: String)

    init(parsing text: String) throws(StoreError) {
        let prefix = "sqlite://"
        guard text.hasPrefix(prefix) else { throw .unsupportedURL(text) }
        let path = String(text.dropFirst(prefix.count))
        guard !path.isEmpty else { throw .unsupportedURL(text) }
        self = .sqlite(path: path)
    }
}
