package ui

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"liminald/ipc"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// cookieName is the cookie that carries the token after the first visit.
const cookieName = "liminald_ui"

// DialOptions are the options a Dialer should give ipc.Dial: a page
// waits at most a second for a daemon that went away to come back before
// it says the daemon cannot answer.
var DialOptions = []ipc.ClientOption{ipc.ReconnectTimeout(time.Second)}

// Dialer connects to the daemon.
type Dialer func(ctx context.Context) (*ipc.Client, error)

// Server serves the web view. Its methods are safe for concurrent use.
type Server struct {
	dial  Dialer
	token string
	log   *slog.Logger
	pages *template.Template
	mux   *http.ServeMux

	mu     sync.Mutex
	client *ipc.Client // nil until dialled, and again once it broke
}

// New returns a server that reaches the daemon through dial, with a new
// random token. Returns an error if the system has no randomness.
func New(dial Dialer, log *slog.Logger) (*Server, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pages, err := template.New("").Funcs(funcs).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	s := &Server{dial: dial, token: hex.EncodeToString(b), log: log, pages: pages, mux: http.NewServeMux()}
	static, _ := fs.Sub(staticFS, "static")
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServer(http.FS(static))))
	s.mux.HandleFunc("GET /{$}", s.conversations)
	s.mux.HandleFunc("GET /c/{conv}", s.messages)
	s.mux.HandleFunc("GET /c/{conv}/m/{msg}", s.message)
	s.mux.HandleFunc("GET /tail", s.tail)
	s.mux.HandleFunc("GET /events", s.events)
	s.mux.HandleFunc("/", s.notFound)
	return s, nil
}

// Token returns the token a first visit must carry (?token=...).
func (s *Server) Token() string { return s.token }

// URL returns the address of the first visit to a server listening on
// addr.
func (s *Server) URL(addr net.Addr) string {
	return "http://" + addr.String() + "/?token=" + s.token
}

// ServeHTTP checks the Host and the token, then serves the page. A first
// visit with the token in its URL gets the cookie and is sent to the same
// URL without it, so the token does not stay in the address bar.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	if !loopbackHost(r.Host) {
		http.Error(w, "forbidden: the web view answers only to a loopback host (127.0.0.1, [::1] or localhost)", http.StatusForbidden)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "the web view is read-only", http.StatusMethodNotAllowed)
		return
	}
	if tok := r.URL.Query().Get("token"); tok != "" {
		if !s.valid(tok) {
			http.Error(w, "forbidden: wrong token; use the URL liminald ui printed", http.StatusForbidden)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: cookieName, Value: s.token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		q := r.URL.Query()
		q.Del("token")
		u := *r.URL
		u.RawQuery = q.Encode()
		http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
		return
	}
	if c, err := r.Cookie(cookieName); err != nil || !s.valid(c.Value) {
		http.Error(w, "forbidden: open the URL liminald ui printed, with its token", http.StatusForbidden)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) valid(tok string) bool {
	return subtle.ConstantTimeCompare([]byte(tok), []byte(s.token)) == 1
}

// loopbackHost reports whether host (a Host header, with or without a
// port) names this machine by a loopback address or "localhost".
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Loopback reports whether addr, a listen address (host:port), is on a
// loopback address or "localhost": the only addresses the web view may
// listen on.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && loopbackHost(host)
}

// daemon returns the client to the daemon, dialling it when there is none
// or the last one broke.
func (s *Server) daemon(ctx context.Context) (*ipc.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		return s.client, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	s.client = c
	return c, nil
}

// broke forgets client c after err, if err says its connection ended, so
// that the next request dials again.
func (s *Server) broke(c *ipc.Client, err error) {
	if !errors.Is(err, ipc.ErrClientClosed) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == c {
		s.client.Close()
		s.client = nil
	}
}

// Close closes the connection to the daemon.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		return nil
	}
	err := s.client.Close()
	s.client = nil
	return err
}

// pathTo returns the path of a page: "/c/CONV" or "/c/CONV/m/MSG", each
// name escaped as one path segment, with query q.
func pathTo(q url.Values, names ...string) string {
	p := ""
	for i, n := range names {
		if i == 0 {
			p += "/c/" + url.PathEscape(n)
		} else {
			p += "/m/" + url.PathEscape(n)
		}
	}
	if p == "" {
		p = "/"
	}
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return p
}
