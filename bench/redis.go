package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// The Redis peer keeps, per conversation, its event log in a stream whose
// length is the conversation's next seq, and per message a hash with its
// state and a hash of its completed steps (step index -> output). Each op
// is one Lua script, so that the decision and its append are atomic; with
// appendonly yes and appendfsync always, Redis fsyncs the append-only file
// before it replies, once per event-loop iteration for all the clients
// served in it.
//
// A stream entry has the fields seq, ts (the server's time in epoch ms),
// type (1 message_received, 2 processing_started, 3 step_completed,
// 4 processing_finished, as in schema.sql), message_id, and received_at or
// step_index and output for the types that carry them. A message hash has
// status (received, in_progress, finished), received_at, received_seq and
// last_step (the highest completed step index, -1 if none).

// redisDecision is a Lua function returning the redelivery decision
// {action, resume_from} for the message whose hash is KEYS[2], or nil when
// the message was never received.
const redisDecision = `
local function decision()
  local status, last = unpack(redis.call('HMGET', KEYS[2], 'status', 'last_step'))
  if status == 'finished' then return {'skip', 0} end
  if status then return {'resume', tonumber(last) + 1} end
  return nil
end
`

// redisAppend is a Lua function adding an event with the given fields to
// the conversation's stream, KEYS[1], and returning its seq.
const redisAppend = `
local function append(...)
  local seq = redis.call('XLEN', KEYS[1])
  local now = redis.call('TIME')
  local ts = string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000))
  redis.call('XADD', KEYS[1], '*', 'seq', seq, 'ts', ts, ...)
  return seq
end
`

// The scripts of the ops, with KEYS = the conversation's stream, the
// message's hash and, for a step, the message's steps hash (see
// redisKeys), and for a write ARGV[1] = the message id. The writes return
// 1 when they append and 0 for a duplicate; a rejected write returns an
// error reply with the code of SPEC §3 and changes nothing.
var (
	// redisDecide: the decision, read-only.
	redisDecide = redis.NewScript(redisDecision + `
return decision() or {'start', 0}
`)
	// redisReceive: ARGV[2] = received_at.
	redisReceive = redis.NewScript(redisDecision + redisAppend + `
local d = decision()
if d then return d end
local seq = append('type', 1, 'message_id', ARGV[1], 'received_at', ARGV[2])
redis.call('HSET', KEYS[2], 'status', 'received', 'received_at', ARGV[2], 'received_seq', seq, 'last_step', -1)
return {'start', seq}
`)
	redisStart = redis.NewScript(redisAppend + `
local status = redis.call('HGET', KEYS[2], 'status')
if not status then return redis.error_reply('unknown_message') end
if status == 'finished' then return redis.error_reply('already_finished') end
if status == 'in_progress' then return 0 end
append('type', 2, 'message_id', ARGV[1])
redis.call('HSET', KEYS[2], 'status', 'in_progress')
return 1
`)
	// redisStep: ARGV[2] = step index, ARGV[3] = output.
	redisStep = redis.NewScript(redisAppend + `
local status, last = unpack(redis.call('HMGET', KEYS[2], 'status', 'last_step'))
if not status then return redis.error_reply('unknown_message') end
if status == 'finished' then return redis.error_reply('already_finished') end
local prior = redis.call('HGET', KEYS[3], ARGV[2])
if prior == ARGV[3] then return 0 end
if prior then return redis.error_reply('step_conflict') end
append('type', 3, 'message_id', ARGV[1], 'step_index', ARGV[2], 'output', ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
if tonumber(ARGV[2]) > tonumber(last) then redis.call('HSET', KEYS[2], 'last_step', ARGV[2]) end
return 1
`)
	redisFinish = redis.NewScript(redisAppend + `
local status = redis.call('HGET', KEYS[2], 'status')
if not status then return redis.error_reply('unknown_message') end
if status == 'finished' then return 0 end
append('type', 4, 'message_id', ARGV[1])
redis.call('HSET', KEYS[2], 'status', 'finished')
return 1
`)
	redisScripts = []*redis.Script{redisDecide, redisReceive, redisStart, redisStep, redisFinish}
)

// redisKeys returns the keys of a message: its conversation's stream, its
// hash and its steps hash. The conversation's length makes the message
// keys unambiguous whatever the names hold.
func redisKeys(conv, msg string) []string {
	m := strconv.Itoa(len(conv)) + ":" + conv + ":" + msg
	return []string{"events:" + conv, "message:" + m, "steps:" + m}
}

// redisSystem runs its own redis-server, reachable only on a unix socket,
// with the append-only file fsynced before every reply.
type redisSystem struct {
	socket string
	running
}

// newRedis returns the Redis peer.
// On SIGTERM Redis fsyncs the append-only file and exits.
func newRedis() System {
	return &redisSystem{running: running{name: "redis-server", quit: syscall.SIGTERM}}
}

func (s *redisSystem) Name() string { return "redis" }

// Start runs redis-server with its files in dir, waits until it answers
// PING and loads the scripts.
func (s *redisSystem) Start(ctx context.Context, dir string) error {
	s.socket = filepath.Join(dir, "redis.sock")
	if err := checkSocketPath(s.socket); err != nil {
		return err
	}
	cmd := exec.Command("redis-server",
		"--port", "0",
		"--unixsocket", s.socket,
		"--unixsocketperm", "700",
		"--dir", dir,
		"--daemonize", "no",
		"--appendonly", "yes",
		"--appendfsync", "always",
		"--save", "",
		"--logfile", "")
	srv, err := startPeerServer(cmd, filepath.Join(dir, "redis.log"))
	if err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	rdb := s.client()
	defer rdb.Close()
	if err := srv.waitReady(ctx, func(ctx context.Context) error { return rdb.Ping(ctx).Err() }); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	for _, sc := range redisScripts {
		if err := sc.Load(ctx, rdb).Err(); err != nil {
			srv.kill()
			return fmt.Errorf("redis: load script: %w", err)
		}
	}
	s.srv = srv
	return nil
}

// client returns a go-redis client of one connection, which neither
// retries nor times out on its own: the caller's context decides.
func (s *redisSystem) client() *redis.Client {
	return redis.NewClient(&redis.Options{
		Network:               "unix",
		Addr:                  s.socket,
		PoolSize:              1,
		MaxRetries:            -1,
		ReadTimeout:           -1,
		WriteTimeout:          -1,
		ContextTimeoutEnabled: true,
		DisableIdentity:       true,
	})
}

// Dial opens one connection to the server.
func (s *redisSystem) Dial(ctx context.Context) (Client, error) {
	if s.srv == nil {
		return nil, errors.New("redis: not started")
	}
	rdb := s.client()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis: %w", err)
	}
	return &redisClient{rdb: rdb}, nil
}

// Version is the server's version, as redis-server --version prints it.
func (s *redisSystem) Version() string {
	out, err := exec.Command("redis-server", "--version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// Settings describes how the server runs and how the clients use it.
func (s *redisSystem) Settings() string {
	return "redis-server on a unix socket: appendonly yes, appendfsync always (fsync before the reply, " +
		"shared by the clients of one event-loop iteration), save \"\" (no snapshots); one connection " +
		"per client, each op one Lua script (EVALSHA) making the decision and its append atomically"
}

// redisClient is a Client over one Redis connection.
type redisClient struct{ rdb *redis.Client }

// redisError maps the error replies of the scripts to the errors of
// SPEC §2, keeping the others as they are.
func redisError(err error) error {
	for _, e := range []error{ErrUnknownMessage, ErrAlreadyFinished, ErrStepConflict} {
		if redis.HasErrorPrefix(err, e.Error()) {
			return fmt.Errorf("%w: %v", e, err)
		}
	}
	return err
}

// redisDecisionOf converts a script's {action, number} reply: the number is
// resume_from with resume, and the seq of message_received with start.
func redisDecisionOf(reply any, err error) (Decision, error) {
	if err != nil {
		return Decision{}, redisError(err)
	}
	r, ok := reply.([]any)
	if !ok || len(r) != 2 {
		return Decision{}, fmt.Errorf("redis: unexpected decision %v", reply)
	}
	action, _ := r[0].(string)
	n, ok := r[1].(int64)
	if !ok {
		return Decision{}, fmt.Errorf("redis: unexpected decision %v", reply)
	}
	switch action {
	case "start":
		return Decision{Action: action, Seq: n}, nil
	case "resume":
		return Decision{Action: action, ResumeFrom: uint32(n)}, nil
	case "skip":
		return Decision{Action: action}, nil
	}
	return Decision{}, fmt.Errorf("redis: unexpected decision %v", reply)
}

func (c *redisClient) Receive(ctx context.Context, conv, msg string, receivedAt int64) (Decision, error) {
	return redisDecisionOf(redisReceive.EvalSha(ctx, c.rdb, redisKeys(conv, msg)[:2], msg, receivedAt).Result())
}

func (c *redisClient) Decide(ctx context.Context, conv, msg string) (Decision, error) {
	return redisDecisionOf(redisDecide.EvalShaRO(ctx, c.rdb, redisKeys(conv, msg)[:2]).Result())
}

func (c *redisClient) Start(ctx context.Context, conv, msg string) error {
	return redisError(redisStart.EvalSha(ctx, c.rdb, redisKeys(conv, msg)[:2], msg).Err())
}

func (c *redisClient) Step(ctx context.Context, conv, msg string, index uint32, output []byte) error {
	return redisError(redisStep.EvalSha(ctx, c.rdb, redisKeys(conv, msg), msg, index, output).Err())
}

func (c *redisClient) Finish(ctx context.Context, conv, msg string) error {
	return redisError(redisFinish.EvalSha(ctx, c.rdb, redisKeys(conv, msg)[:2], msg).Err())
}

func (c *redisClient) Close() error { return c.rdb.Close() }
