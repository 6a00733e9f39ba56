package torture_test

import (
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// proxy is a TCP proxy in front of one kube-apiserver: the load balancer
// that a replica's connections go through, and the network between them,
// where TestTortureHA injects its network faults. It sees TLS, not
// requests, so a fault hits whatever bytes are on the way: requests,
// responses, watch events.
type proxy struct {
	ln      net.Listener
	backend string
	wg      sync.WaitGroup // the accept loop and every pipe's goroutines

	mu    sync.Mutex // guards the fields below
	pipes map[*pipe]struct{}
	// latency is added to every chunk, each way, while a delay lasts.
	latency time.Duration
	// blocked is closed while no drop lasts; during one it is open, and
	// every chunk waits on it.
	blocked chan struct{}
	// loseNext makes the next chunk the server sends lost: its connection
	// is cut instead.
	loseNext bool
	closed   bool
}

// pipe is one proxied connection.
type pipe struct {
	client, server net.Conn
	once           sync.Once
	cut            chan struct{} // closed when the connection is cut
}

// startProxy starts a proxy on a loopback port in front of backend
// (host:port), and closes it at the end of t.
func startProxy(t *testing.T, backend string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, backend: backend, pipes: map[*pipe]struct{}{}, blocked: closedChan()}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// addr is where the clients connect.
func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		// The server is dialled for each connection, as an L4 load
		// balancer does: one that is down resets the client's connection.
		s, err := net.DialTimeout("tcp", p.backend, time.Second)
		if err != nil {
			reset(c)
			continue
		}
		pp := &pipe{client: c, server: s, cut: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			pp.close()
			return
		}
		p.pipes[pp] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.copy(pp, pp.server, pp.client, false) })
		p.wg.Go(func() { p.copy(pp, pp.client, pp.server, true) })
	}
}

// copy forwards the chunks read from src to dst until either end closes
// or the connection is cut; fromServer tells the direction.
func (p *proxy) copy(pp *pipe, dst, src net.Conn, fromServer bool) {
	defer p.forget(pp)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.pass(pp, fromServer) {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // either end closed: HTTP ends the connection
		}
	}
}

// pass holds a chunk as the faults in force say, and reports whether to
// forward it; false when the connection was cut meanwhile, or the chunk
// is a lost response and the connection is cut for it.
func (p *proxy) pass(pp *pipe, fromServer bool) bool {
	p.mu.Lock()
	blocked, latency := p.blocked, p.latency
	lose := fromServer && p.loseNext
	if lose {
		p.loseNext = false
	}
	p.mu.Unlock()
	if lose {
		pp.close()
		return false
	}
	select {
	case <-blocked:
	case <-pp.cut:
		return false
	}
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-pp.cut:
			return false
		}
	}
	return true
}

// forget closes pp and drops it from the proxy's set.
func (p *proxy) forget(pp *pipe) {
	pp.close()
	p.mu.Lock()
	delete(p.pipes, pp)
	p.mu.Unlock()
}

// close cuts the connection, with a reset each way.
func (pp *pipe) close() {
	pp.once.Do(func() {
		close(pp.cut)
		reset(pp.client)
		reset(pp.server)
	})
}

// reset closes c with a TCP reset, as a peer that lost the connection's
// state answers.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// cutAll resets every open connection.
func (p *proxy) cutAll() {
	p.mu.Lock()
	pipes := make([]*pipe, 0, len(p.pipes))
	for pp := range p.pipes {
		pipes = append(pipes, pp)
	}
	p.mu.Unlock()
	for _, pp := range pipes {
		pp.close()
	}
}

// delay adds latency to every chunk, each way, for d.
func (p *proxy) delay(latency, d time.Duration) {
	p.mu.Lock()
	p.latency = latency
	p.mu.Unlock()
	time.Sleep(d)
	p.mu.Lock()
	p.latency = 0
	p.mu.Unlock()
}

// drop forwards nothing, either way, for d, as a network that loses every
// packet; then it cuts every connection, as the peers' keepalives would
// once they gave up, so that nothing held is delivered late. A request
// that had reached the server before the drop may have been applied, and
// its response is lost.
func (p *proxy) drop(d time.Duration) {
	p.mu.Lock()
	open := make(chan struct{})
	p.blocked = open
	p.mu.Unlock()
	time.Sleep(d)
	p.cutAll()
	p.mu.Lock()
	p.blocked = closedChan()
	p.mu.Unlock()
	close(open)
}

// loseResponse makes the next chunk the server sends lost, and its
// connection cut: the requests on that connection reached the server, and
// may have been applied.
func (p *proxy) loseResponse() {
	p.mu.Lock()
	p.loseNext = true
	p.mu.Unlock()
}

// close stops accepting, cuts every connection and waits for the
// goroutines.
func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.cutAll()
	p.wg.Wait()
}

// Network fault kinds, as the table names them.
const (
	netDelay = "delay (latency each way)"
	netDrop  = "drop (nothing passes, then connections cut)"
	netCut   = "cut (every connection reset)"
	netLose  = "response lost after the request reached the server"
)

var allNetFaults = []string{netDelay, netDrop, netCut, netLose}

// netFaults injects network faults into proxies, one at a time, at random
// moments, until stop.
type netFaults struct {
	proxies []*proxy
	gap     time.Duration // the mean pause between two faults
	once    sync.Once
	stopped chan struct{}
	done    chan struct{}
	counts  map[string]int // written by run, read after done
	events  []netEvent     // likewise
}

// netEvent is one network fault: when it began, its kind, and the proxy.
type netEvent struct {
	at    time.Time
	kind  string
	proxy int
}

func startNetFaults(proxies []*proxy, gap time.Duration) *netFaults {
	f := &netFaults{proxies: proxies, gap: gap, stopped: make(chan struct{}), done: make(chan struct{}), counts: map[string]int{}}
	go f.run()
	return f
}

func (f *netFaults) run() {
	defer close(f.done)
	for {
		select {
		case <-f.stopped:
			return
		case <-time.After(time.Duration(rand.Int64N(int64(2 * f.gap)))):
		}
		i := rand.IntN(len(f.proxies))
		p := f.proxies[i]
		kind := allNetFaults[rand.IntN(len(allNetFaults))]
		f.counts[kind]++
		f.events = append(f.events, netEvent{at: time.Now(), kind: kind, proxy: i})
		switch kind {
		case netDelay:
			p.delay(time.Duration(50+rand.IntN(250))*time.Millisecond, time.Second)
		case netDrop:
			p.drop(time.Duration(200+rand.IntN(800)) * time.Millisecond)
		case netCut:
			p.cutAll()
		case netLose:
			p.loseResponse()
		}
	}
}

// stop ends the faults, once, and returns how many of each kind were
// injected.
func (f *netFaults) stop() map[string]int {
	f.once.Do(func() { close(f.stopped) })
	<-f.done
	for _, p := range f.proxies {
		p.mu.Lock()
		p.loseNext = false
		p.mu.Unlock()
	}
	return f.counts
}
