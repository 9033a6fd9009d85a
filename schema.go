// Package liminald holds the database schema, embedded for the store.
// Everything else lives in the packages beside it; see README.md.
package liminald

import _ "embed"

// Schema is schema.sql: the tables of database version SchemaVersion.
//
//go:embed schema.sql
var Schema string

// SchemaVersion is the PRAGMA user_version that Schema creates.
const SchemaVersion = 1
