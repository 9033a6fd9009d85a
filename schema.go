// Package liminald holds the database schema, embedded for the store.
// Everything else lives in the packages beside it; see README.md.
package liminald

import (
	"embed"
	"fmt"
)

// Schema is schema.sql: the tables of database version SchemaVersion.
//
//go:embed schema.sql
var Schema string

// SchemaVersion is the PRAGMA user_version that Schema creates.
const SchemaVersion = 3

//go:embed migrations/*.sql
var migrations embed.FS

// Migration returns the statements that bring a database of version
// to-1 to version to: migrations/<to>.sql.
func Migration(to int) (string, error) {
	b, err := migrations.ReadFile(fmt.Sprintf("migrations/%d.sql", to))
	if err != nil {
		return "", fmt.Errorf("no migration to schema version %d: %w", to, err)
	}
	return string(b), nil
}
