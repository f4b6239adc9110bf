import KVEngine

/// One statement of a pipeline.
struct PGQuery {
    var sql: String
    var params: [PGParam]
    init(_ sql: String, _ params: [PGParam] = []) {
        self.sql = sql
        self.params = params
    }
}
