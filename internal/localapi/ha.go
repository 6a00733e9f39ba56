package localapi

// A local control plane shaped like a highly available cluster's: an etcd
// cluster of several members, with peer URLs on loopback, and several
// kube-apiservers over it, each with every member in --etcd-servers. The
// processes are envtest's (its Etcd and APIServer, with their flags and
// health checks); what envtest does not do, this file does: the members'
// cluster flags, one set of certificates for every API server, and the
// faults a test injects (SIGKILL, SIGSTOP, a restart).

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// haStartTimeout bounds the start of one process: on two cores, with race
// builds compiling beside it, a kube-apiserver over three members can take
// half a minute.
const haStartTimeout = 2 * time.Minute

// HA is a running local control plane of several etcd members and
// kube-apiservers. Every API server serves the same data, with the same
// certificates and users, as the servers of one cluster behind a load
// balancer do.
type HA struct {
	Members []*Member
	Servers []*APIServer
	// Dir holds the members' data, the certificates and every process's
	// log (NAME.log); Stop removes it.
	Dir string
}

// Member is one etcd member of an HA control plane. Kill, Pause and
// Resume (of proc) signal it.
type Member struct {
	Name      string
	ClientURL *url.URL
	PeerURL   *url.URL

	path, dataDir, cluster string
	log                    *os.File

	proc // its mu guards etcd too
	etcd *envtest.Etcd
}

// APIServer is one kube-apiserver of an HA control plane. Kill, Pause and
// Resume (of proc) signal it.
type APIServer struct {
	// Config is for an admin user (group system:masters), without
	// client-side rate limits. Every server of the HA control plane trusts
	// the same user.
	Config *rest.Config

	log *os.File

	proc // its mu guards api too
	api  *envtest.APIServer
}

// proc is a process of the control plane, which envtest started and
// waits for.
type proc struct {
	mu  sync.Mutex // guards pid, and the envtest process of the embedder
	pid int        // 0 while it is killed
}

// StartHA starts an etcd cluster of members members and servers
// kube-apiservers over it, from AssetsDir. Each API server lists every
// member in --etcd-servers. The processes exit with this one, as Start's
// do. On an error, what was started is stopped.
func StartHA(members, servers int) (*HA, error) {
	if members < 1 || servers < 1 {
		return nil, fmt.Errorf("localapi: an HA control plane of %d etcd members and %d API servers: want at least one of each", members, servers)
	}
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	if err := os.Setenv(exitWithParentEnv, strconv.Itoa(os.Getpid())); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "leaselock-ha-")
	if err != nil {
		return nil, err
	}
	h := &HA{Dir: dir}
	if err := h.startMembers(filepath.Join(assets, "etcd"), members); err != nil {
		return nil, errors.Join(err, h.Stop())
	}
	if err := h.startServers(filepath.Join(assets, "kube-apiserver"), servers); err != nil {
		return nil, errors.Join(err, h.Stop())
	}
	return h, nil
}

// startMembers starts the etcd members together: none is healthy before
// a quorum of them runs.
func (h *HA) startMembers(etcd string, n int) error {
	var peers []string
	for i := range n {
		client, err := loopbackURL()
		if err != nil {
			return err
		}
		peer, err := loopbackURL()
		if err != nil {
			return err
		}
		m := &Member{
			Name: "member-" + strconv.Itoa(i), ClientURL: client, PeerURL: peer,
			path: etcd, dataDir: filepath.Join(h.Dir, "member-"+strconv.Itoa(i)),
		}
		if m.log, err = os.Create(filepath.Join(h.Dir, m.Name+".log")); err != nil {
			return err
		}
		h.Members = append(h.Members, m)
		peers = append(peers, m.Name+"="+peer.String())
	}
	for _, m := range h.Members {
		m.cluster = strings.Join(peers, ",")
	}
	return together(len(h.Members), func(i int) error { return h.Members[i].start("new") })
}

// startServers starts the first API server, which makes the certificates
// and the admin user, then the others with the same ones, one after
// another: they share envtest's authenticator, which a start configures.
func (h *HA) startServers(path string, n int) error {
	certs := filepath.Join(h.Dir, "certs")
	if err := os.Mkdir(certs, 0o700); err != nil {
		return err
	}
	var endpoints []string
	for _, m := range h.Members {
		endpoints = append(endpoints, m.ClientURL.String())
	}
	for i := range n {
		log, err := os.Create(filepath.Join(h.Dir, "kube-apiserver-"+strconv.Itoa(i)+".log"))
		if err != nil {
			return err
		}
		api := &envtest.APIServer{
			Path: path, CertDir: certs, EtcdURL: h.Members[0].ClientURL,
			StartTimeout: haStartTimeout, Out: log, Err: log,
		}
		api.Configure().Set("etcd-servers", strings.Join(endpoints, ","))
		h.Servers = append(h.Servers, &APIServer{api: api, log: log})
	}
	first := h.Servers[0]
	if err := first.Restart(); err != nil {
		return fmt.Errorf("kube-apiserver 0: %w", err)
	}
	admin, err := first.api.SecureServing.Authn.AddUser(envtest.User{Name: "leaselock-ha-admin", Groups: []string{"system:masters"}},
		&rest.Config{TLSClientConfig: rest.TLSClientConfig{CAData: first.api.SecureServing.CA}})
	if err != nil {
		return err
	}
	for i, s := range h.Servers[1:] {
		// The certificates exist: envtest keeps them, and uses the first
		// server's client CA.
		s.api.SecureServing.Authn = first.api.SecureServing.Authn
		if err := s.Restart(); err != nil {
			return fmt.Errorf("kube-apiserver %d: %w", i+1, err)
		}
	}
	for _, s := range h.Servers {
		s.Config = rest.CopyConfig(admin)
		s.Config.Host = s.api.SecureServing.URL("https", "").String()
		s.Config.QPS, s.Config.Burst = -1, -1
	}
	return nil
}

// together runs start(0) ... start(n-1) at once and joins their errors.
func together(n int, start func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = start(i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// loopbackURL returns an http URL on a free loopback port.
func loopbackURL() (*url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer l.Close()
	return &url.URL{Scheme: "http", Host: l.Addr().String()}, nil
}

// start starts the member with its data folder as it is: state is "new"
// for the first start, "existing" for a restart.
func (m *Member) start(state string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := &envtest.Etcd{
		Path: m.path, URL: m.ClientURL, DataDir: m.dataDir,
		StartTimeout: haStartTimeout, Out: m.log, Err: m.log,
	}
	e.Configure().
		Set("name", m.Name).
		Set("initial-cluster", m.cluster).
		Set("initial-cluster-state", state).
		Set("initial-cluster-token", "leaselock-ha").
		Set("initial-advertise-peer-urls", m.PeerURL.String()).
		Set("listen-peer-urls", m.PeerURL.String())
	if err := e.Start(); err != nil {
		return fmt.Errorf("etcd %s: %w", m.Name, err)
	}
	pid, err := childPID("etcd", "--data-dir="+m.dataDir)
	if err != nil {
		return err
	}
	m.etcd, m.pid = e, pid
	return nil
}

// Restart starts a killed member again, on its data folder, and returns
// once it is healthy: it has rejoined the cluster.
func (m *Member) Restart() error { return m.start("existing") }

// IsLeader reports whether the member is its cluster's leader now, as its
// metrics tell it.
func (m *Member) IsLeader() (bool, error) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(m.ClientURL.JoinPath("metrics").String())
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
		if v, ok := strings.CutPrefix(sc.Text(), "etcd_server_is_leader "); ok {
			return v == "1", nil
		}
	}
	return false, fmt.Errorf("etcd %s: no etcd_server_is_leader in its metrics", m.Name)
}

// Leader returns the member that leads the cluster now, or an error when
// none of the running members does.
func (h *HA) Leader() (*Member, error) {
	var errs []error
	for _, m := range h.Members {
		ok, err := m.IsLeader()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			return m, nil
		}
	}
	return nil, errors.Join(append([]error{errors.New("localapi: no etcd member leads")}, errs...)...)
}

// Restart starts the API server, killed or never started, on its port with
// the certificates of the control plane, and returns once it is ready. The
// servers share envtest's authenticator, which a start configures: start
// one at a time.
func (s *APIServer) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.api.Start(); err != nil {
		return err
	}
	pid, err := childPID("kube-apiserver", "--secure-port="+s.api.SecureServing.Port)
	if err != nil {
		return err
	}
	s.pid = pid
	return nil
}

// Kill kills the process with SIGKILL, paused or not, and returns once it
// has exited.
func (p *proc) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := kill(p.pid)
	p.pid = 0
	return err
}

// Pause stops the process with SIGSTOP: its connections stay open and
// answer nothing, its watches send nothing, and the requests of an API
// server that an etcd member carries wait. Resume lets it go on.
func (p *proc) Pause() error { return p.signal(syscall.SIGSTOP) }

// Resume continues a paused process (SIGCONT).
func (p *proc) Resume() error { return p.signal(syscall.SIGCONT) }

func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pid == 0 {
		return errors.New("localapi: the process is not running")
	}
	return syscall.Kill(p.pid, sig)
}

// Stop kills every process of the control plane and removes Dir. A
// graceful stop would wait for every open watch; nothing of the run is
// kept, so SIGKILL loses nothing.
func (h *HA) Stop() error {
	var errs []error
	for _, s := range h.Servers {
		errs = append(errs, s.Kill(), s.log.Close())
	}
	for _, m := range h.Members {
		errs = append(errs, m.Kill(), m.log.Close())
	}
	return errors.Join(append(errs, os.RemoveAll(h.Dir))...)
}

// kill kills process pid (0: none) with SIGKILL and waits until it was
// reaped: envtest, which started it, waits for it.
func kill(pid int) error {
	if pid == 0 {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); errors.Is(err, os.ErrNotExist) {
			return nil
		}
	}
	return fmt.Errorf("localapi: process %d still there a minute after SIGKILL", pid)
}

// childPID finds the process named name, a child of this one (of any of
// its threads), whose command line has the argument arg.
func childPID(name, arg string) (int, error) {
	lists, err := filepath.Glob("/proc/self/task/*/children")
	if err != nil {
		return 0, err
	}
	for _, list := range lists {
		children, err := os.ReadFile(list)
		if err != nil {
			continue // the thread exited
		}
		for _, pid := range strings.Fields(string(children)) {
			comm, err := os.ReadFile(filepath.Join("/proc", pid, "comm"))
			if err != nil || strings.TrimSpace(string(comm)) != name {
				continue
			}
			cmdline, err := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
			if err == nil && slices.Contains(strings.Split(string(cmdline), "\x00"), arg) {
				return strconv.Atoi(pid)
			}
		}
	}
	return 0, fmt.Errorf("localapi: no %s process of this one with %s", name, arg)
}
