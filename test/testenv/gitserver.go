package testenv

import (
	"bytes"
	"crypto/subtle"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// GitServer is a real Git smart-HTTP server: git http-backend behind net/http/cgi, with basic
// auth, on 127.0.0.1. It can be stopped and started again on the same address to test outages.
type GitServer struct {
	// Root holds the bare repositories.
	Root     string
	Username string
	Password string
	// ProtocolV0 makes the server ignore clients' Git-Protocol header, as a server without
	// protocol v2 does.
	ProtocolV0 bool

	mu       sync.Mutex
	addr     string
	listener net.Listener
	srv      *http.Server
	counts   Requests
	log      []string
	stderr   *os.File
	fault    *pushFault
	// housekeeping: see SetHousekeeping; packing holds the repositories being packed, and
	// repack those pushed to while they were.
	housekeeping bool
	packing      map[string]bool
	repack       map[string]bool
	packs        int
}

// PushFailure is how the server dies in the middle of a push.
type PushFailure int

const (
	// DieMidPush: the server reads the whole push, then drops the connection before git sees
	// it: no ref moves, and the pusher hears nothing.
	DieMidPush PushFailure = iota + 1
	// DieAfterUpdate: git receive-pack runs to the end (every ref moves), then the connection
	// drops before the answer: the pusher cannot tell that its push landed.
	DieAfterUpdate
	// HoldPush: the server holds the push, unanswered, until it is released, then serves it.
	HoldPush
)

type pushFault struct {
	match   string
	how     PushFailure
	down    time.Duration
	fired   chan struct{}
	release chan struct{}
}

// FailNextPush arms a one-shot failure for the next push whose request names a ref starting
// with refPrefix: the server dies as how says and stays down for down, then serves again on the
// same address. The returned channel is closed when the failure has happened.
func (g *GitServer) FailNextPush(refPrefix string, how PushFailure, down time.Duration) <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fault = &pushFault{match: refPrefix, how: how, down: down, fired: make(chan struct{})}
	return g.fault.fired
}

// HoldNextPush holds the next push whose request names a ref starting with refPrefix: held is
// closed once the push has reached the server, which answers it only after release.
func (g *GitServer) HoldNextPush(refPrefix string) (held <-chan struct{}, release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := &pushFault{match: refPrefix, how: HoldPush, fired: make(chan struct{}), release: make(chan struct{})}
	g.fault = f
	var once sync.Once
	return f.fired, func() { once.Do(func() { close(f.release) }) }
}

// takeFault returns the armed failure when this request is the push it is for, disarming it.
// The body is read and put back.
func (g *GitServer) takeFault(r *http.Request) *pushFault {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/git-receive-pack") {
		return nil
	}
	g.mu.Lock()
	f := g.fault
	g.mu.Unlock()
	if f == nil {
		return nil
	}
	body, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil || !bytes.Contains(body, []byte(f.match)) {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fault != f {
		return nil
	}
	g.fault = nil
	return f
}

// die drops the request's connection without an answer, takes the server down for the fault's
// time, then serves again on the same address.
func (g *GitServer) die(w http.ResponseWriter, f *pushFault) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
		}
	}
	g.Stop()
	close(f.fired)
	go func() {
		time.Sleep(f.down)
		_ = g.Start()
	}()
}

// maxLog bounds the request log.
const maxLog = 100_000

// Log returns every request so far as "METHOD path?query", in order.
func (g *GitServer) Log() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.log...)
}

// Requests counts what clients asked the server, by Git operation.
type Requests struct {
	// HTTP counts every request, whatever it asks.
	HTTP int
	// RefListings are ref advertisements for fetching (ls-remote, and the start of a fetch).
	RefListings int
	// Fetches are upload-pack requests that transfer objects.
	Fetches int
	// Pushes are receive-pack requests that send objects.
	Pushes int
	// PushRequests are every request of a push: receive-pack's advertisement and the push.
	PushRequests int
	// BytesOut and BytesIn are the bytes of every response and request body.
	BytesOut, BytesIn int64
	// PushBytes are the bytes, both ways, of pushes (receive-pack's advertisement and the
	// push itself); the rest are listings and fetches.
	PushBytes int64
}

// Requests returns the counts so far.
func (g *GitServer) Requests() Requests {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.counts
}

func (g *GitServer) count(r *http.Request) {
	// The body is peeked before the lock: other requests are not held up by this one's client.
	lsRefs := r.Method == http.MethodPost && r.Header.Get("Git-Protocol") == "version=2" && peek(r, 64) == "command=ls-refs"
	v2 := r.Header.Get("Git-Protocol") == "version=2"
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.log) < maxLog {
		g.log = append(g.log, r.Method+" "+r.URL.RequestURI())
	}
	g.counts.HTTP++
	if isPush(r) {
		g.counts.PushRequests++
	}
	switch {
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/info/refs") && r.URL.Query().Get("service") == "git-upload-pack":
		if !v2 { // a v2 client asks for capabilities here, and lists with ls-refs
			g.counts.RefListings++
		}
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/git-upload-pack"):
		if lsRefs {
			g.counts.RefListings++
		} else {
			g.counts.Fetches++
		}
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/git-receive-pack"):
		g.counts.Pushes++
	}
}

// StartGitServer starts a server with the given credentials; an empty username disables auth.
func StartGitServer(username, password string) (*GitServer, error) {
	root, err := os.MkdirTemp("", "cellsync-git-")
	if err != nil {
		return nil, err
	}
	g := &GitServer{Root: root, Username: username, Password: password}
	if err := g.Start(); err != nil {
		return nil, err
	}
	return g, nil
}

// Start serves (again) on the server's address, or a new one the first time.
func (g *GitServer) Start() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.srv != nil {
		return nil
	}
	addr := g.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("failed to listen for the git server: %w", err)
	}
	g.addr = l.Addr().String()
	backend, err := httpBackendPath()
	if err != nil {
		_ = l.Close()
		return err
	}
	// git writes its progress ("Unpacking objects: ...") to stderr: into a log, not the
	// terminal of whoever runs the server.
	stderr, err := os.OpenFile(filepath.Join(g.Root, "http-backend.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		_ = l.Close()
		return err
	}
	h := &cgi.Handler{
		Path:   backend,
		Root:   "/",
		Env:    []string{"GIT_PROJECT_ROOT=" + g.Root, "GIT_HTTP_EXPORT_ALL=1"},
		Stderr: stderr,
	}
	g.listener = l
	g.stderr = stderr
	g.srv = &http.Server{Handler: g.auth(h)}
	go func() { _ = g.srv.Serve(l) }()
	return nil
}

// Stop closes the server; the repositories stay.
func (g *GitServer) Stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.srv != nil {
		_ = g.srv.Close()
		g.srv = nil
		_ = g.stderr.Close()
	}
}

// Close stops the server and removes the repositories.
func (g *GitServer) Close() {
	g.Stop()
	_ = os.RemoveAll(g.Root)
}

func (g *GitServer) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.Username != "" {
			u, p, ok := r.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(g.Username)) != 1 ||
				subtle.ConstantTimeCompare([]byte(p), []byte(g.Password)) != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="cellsync-test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			// git http-backend refuses pushes from anonymous users.
			r.Header.Set("Remote-User", u)
		}
		g.mu.Lock()
		v0 := g.ProtocolV0
		g.mu.Unlock()
		if v0 {
			r.Header.Del("Git-Protocol")
		}
		spooled, err := unchunk(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer func() { _ = spooled.Close() }()
		g.count(r)
		if f := g.takeFault(r); f != nil && f.how == HoldPush {
			close(f.fired)
			<-f.release
		} else if f != nil {
			if f.how == DieAfterUpdate {
				// git runs to the end, every ref moves; its answer goes nowhere.
				next.ServeHTTP(httptest.NewRecorder(), r)
			}
			g.die(w, f)
			return
		}
		body := &countingReader{r: r.Body}
		r.Body = body
		cw := &countingWriter{ResponseWriter: w}
		next.ServeHTTP(cw, r)
		push := isPush(r)
		g.mu.Lock()
		g.counts.BytesOut += cw.n
		g.counts.BytesIn += body.n
		if push {
			g.counts.PushBytes += cw.n + body.n
		}
		keep := g.housekeeping && r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/git-receive-pack")
		g.mu.Unlock()
		if keep {
			g.housekeep(filepath.Join(g.Root, filepath.FromSlash(strings.TrimSuffix(r.URL.Path, "/git-receive-pack"))))
		}
	})
}

// isPush reports whether the request is part of a push: receive-pack's advertisement or the push.
func isPush(r *http.Request) bool {
	return strings.HasSuffix(r.URL.Path, "/git-receive-pack") || r.URL.Query().Get("service") == "git-receive-pack"
}

// unchunk reads a request body sent without a length (chunked, as git sends a push larger than
// its http.postBuffer) into a temporary file and gives the request that length: Go's CGI host
// refuses chunked bodies, where the servers in front of git http-backend in production (nginx,
// Apache) buffer them and pass CONTENT_LENGTH, as this does. The caller closes what it returns.
func unchunk(r *http.Request) (io.Closer, error) {
	if r.ContentLength >= 0 || r.Body == nil || r.Body == http.NoBody {
		return io.NopCloser(nil), nil
	}
	f, err := os.CreateTemp("", "cellsync-git-body-")
	if err != nil {
		return nil, err
	}
	_ = os.Remove(f.Name()) // gone once closed
	n, err := io.Copy(f, r.Body)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("reading the request body: %w", err)
	}
	_ = r.Body.Close()
	r.Body, r.ContentLength, r.TransferEncoding = f, n, nil
	return f, nil
}

// looseRefsLimit is how many loose refs a repository keeps before housekeeping packs them.
const looseRefsLimit = 1000

// SetHousekeeping turns on what a Git host does after pushes (GitLab's and Gitea's housekeeping,
// for example): once a push leaves more than 1,000 loose refs in a repository, its refs are
// packed (git pack-refs --all) in the background. Without it, every ref a push writes stays a
// file of its own, and a v2 listing with a ref-prefix reads every file in the prefix's folder:
// at 10,000 cells about 70 ms of the server's CPU per listing instead of 5
// (BenchmarkListingLooseAndPackedRefs).
func (g *GitServer) SetHousekeeping(on bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.housekeeping = on
}

// RefPacks counts the housekeeping runs that packed a repository's refs.
func (g *GitServer) RefPacks() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.packs
}

// housekeep packs dir's refs in the background when it holds more loose refs than the limit;
// one run at a time per repository, and one more when pushes came in during a run.
func (g *GitServer) housekeep(dir string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.packing == nil {
		g.packing, g.repack = map[string]bool{}, map[string]bool{}
	}
	if g.packing[dir] {
		g.repack[dir] = true
		return
	}
	g.packing[dir] = true
	logTo := g.stderr
	go func() {
		for {
			if looseRefs(dir, looseRefsLimit+1) > looseRefsLimit {
				if out, err := exec.Command("git", "-C", dir, "pack-refs", "--all").CombinedOutput(); err == nil {
					g.mu.Lock()
					g.packs++
					g.mu.Unlock()
				} else {
					fmt.Fprintf(logTo, "housekeeping %s: git pack-refs: %v: %s\n", dir, err, out)
				}
			}
			g.mu.Lock()
			if !g.repack[dir] {
				delete(g.packing, dir)
				g.mu.Unlock()
				return
			}
			delete(g.repack, dir)
			g.mu.Unlock()
		}
	}()
}

// looseRefs counts the loose refs under dir/refs, stopping at limit.
func looseRefs(dir string, limit int) int {
	n := 0
	_ = filepath.WalkDir(filepath.Join(dir, "refs"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
			if n >= limit {
				return filepath.SkipAll
			}
		}
		return nil
	})
	return n
}

// SetProtocolV0 makes the server answer every client with protocol v0 (true) or as git does.
func (g *GitServer) SetProtocolV0(v0 bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ProtocolV0 = v0
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// peek returns the payload of the request body's first pkt-line (up to n bytes, without its
// newline), leaving the body whole.
func peek(r *http.Request, n int) string {
	head := make([]byte, n)
	k, _ := io.ReadFull(r.Body, head)
	head = head[:k]
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), r.Body), r.Body}
	if len(head) < 4 {
		return ""
	}
	line := head[4:]
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	return string(line)
}

// Flush passes flushes on, for the CGI handler's streaming.
func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

type countingReader struct {
	r io.ReadCloser
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

// CreateRepo makes an empty bare repository that accepts pushes over HTTP and returns its URL
// (without credentials).
func (g *GitServer) CreateRepo(name string) (string, error) {
	dir := filepath.Join(g.Root, name+".git")
	for _, args := range [][]string{
		{"init", "--bare", "--initial-branch=main", dir},
		{"-C", dir, "config", "http.receivepack", "true"},
		{"-C", dir, "config", "receive.advertiseAtomic", "true"},
		{"-C", dir, "config", "uploadpack.allowReachableSHA1InWant", "true"},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return g.URL(name), nil
}

// URL is a repository's URL without credentials.
func (g *GitServer) URL(name string) string {
	return fmt.Sprintf("http://%s/%s.git", g.addr, name)
}

// AuthURL is a repository's URL with the credentials in it, for the git CLI.
func (g *GitServer) AuthURL(name string) string {
	u, _ := url.Parse(g.URL(name))
	if g.Username != "" {
		u.User = url.UserPassword(g.Username, g.Password)
	}
	return u.String()
}

// RepoDir is a repository's folder on disk.
func (g *GitServer) RepoDir(name string) string { return filepath.Join(g.Root, name+".git") }

func httpBackendPath() (string, error) {
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		return "", fmt.Errorf("git is not installed: %w", err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("git-http-backend not found at %s", p)
	}
	return p, nil
}

// Git runs the git CLI in dir and returns its trimmed output.
func Git(dir string, args ...string) (string, error) {
	return GitInput(dir, "", args...)
}

// GitInput is Git with stdin.
func GitInput(dir, stdin string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_AUTHOR_NAME=test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=test", "GIT_COMMITTER_EMAIL=test@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// BranchHeads is Heads limited to the branches whose name starts with prefix.
func (g *GitServer) BranchHeads(name, prefix string) (map[string]string, error) {
	all, err := g.Heads(name)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for b, c := range all {
		if strings.HasPrefix(b, prefix) {
			out[b] = c
		}
	}
	return out, nil
}

// RevParse resolves a revision (for example "<commit>^{tree}" or "<commit>^") in a repository.
func (g *GitServer) RevParse(name, rev string) (string, error) {
	return Git(g.RepoDir(name), "rev-parse", rev)
}

// Heads lists a repository's branches and their commits, read from disk with the git CLI.
func (g *GitServer) Heads(name string) (map[string]string, error) {
	out, err := Git(g.RepoDir(name), "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads/")
	if err != nil {
		return nil, err
	}
	heads := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			heads[f[0]] = f[1]
		}
	}
	return heads, nil
}
