// Package daemon holds the lifecycle of liminald around its store and its
// server: the configuration and its reload, the default paths, the locks
// that keep one daemon per database and per socket, the unix socket and its
// permissions, peer credentials, systemd readiness and socket activation,
// and the logger.
//
// The pieces are small and independent so that Run can put them together in
// the order the daemon needs:
//
//   - Load reads the configuration (defaults, file, environment, flags) and
//     Validate checks it; Diff tells a reload what changed and whether it can
//     change live; WatchConfig reports edits of the configuration file.
//   - DefaultSocketPath, DefaultDBPath and DefaultConfigPath give the paths
//     used when none is configured; PrepareDir makes their directories;
//     CheckSocketPath refuses a socket path the platform cannot bind.
//   - AcquireLock takes the exclusive flock on <db>.lock and <socket>.lock.
//   - Listen creates the socket, never reachable with a wider mode than the
//     configured one; Activated takes sockets passed by systemd instead;
//     WatchSocket reports the socket file deleted under a running daemon.
//   - PeerCred reads a connection's peer credentials and AllowList decides
//     whether that peer may talk to the daemon.
//   - Notify reports readiness, reloads and shutdown to systemd.
//   - NewLogger builds the structured logger with a level that can change
//     live.
package daemon
