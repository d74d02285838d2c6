package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports (proc(5)).
const clockTicks = 100

// procSample is one reading of a process's CPU time and resident memory.
type procSample struct {
	cpu time.Duration // user + system
	rss int64         // bytes
	hwm int64         // peak RSS of the process's life, bytes
}

// readProc reads /proc/PID/stat (utime, stime: fields 14 and 15) and
// /proc/PID/status (VmRSS, VmHWM).
func readProc(pid int) (procSample, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procSample{}, err
	}
	cpu, err := parseProcStat(stat)
	if err != nil {
		return procSample{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procSample{}, err
	}
	return procSample{cpu: cpu, rss: parseStatusKB(status, "VmRSS"), hwm: parseStatusKB(status, "VmHWM")}, nil
}

// parseProcStat returns utime+stime of a /proc/PID/stat line. The command
// name (field 2) is in parentheses and may hold spaces, so fields are
// counted after its closing parenthesis.
func parseProcStat(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("short line")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// parseStatusKB returns a "kB" field of /proc/PID/status (VmRSS, VmHWM)
// in bytes, 0 when absent.
func parseStatusKB(b []byte, field string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			return 0
		}
		kb, _ := strconv.ParseInt(f[0], 10, 64)
		return kb * 1024
	}
	return 0
}

// procName is the command name of pid (/proc/PID/comm).
func procName(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// procUsage is what a benchmark reports of a local process.
type procUsage struct {
	PID        int     `json:"pid"`
	Name       string  `json:"name"`
	CPUPercent float64 `json:"cpu_percent"` // of one core, over the load phase
	// CPUMicrosPerMsg is CPU time over messages handled in the load phase.
	CPUMicrosPerMsg float64 `json:"cpu_us_per_msg,omitempty"`
	RSSMaxMB        float64 `json:"rss_max_mb"`
	RSSEndMB        float64 `json:"rss_end_mb"`
	// RSSStartMB is the RSS when the load phase started; RSSPeakMB the
	// process's peak RSS since it started (VmHWM, which the kernel updates
	// lazily, or the largest sample if higher), before the load too.
	RSSStartMB float64 `json:"rss_start_mb"`
	RSSPeakMB  float64 `json:"rss_peak_mb"`
}

// procWatch samples processes' RSS every period between Start and Stop,
// and their CPU time at both ends.
type procWatch struct {
	pids   []int
	period time.Duration

	mu     sync.Mutex
	first  []procSample
	last   []procSample
	maxRSS []int64
	t0, t1 time.Time

	cancel context.CancelFunc
	done   chan struct{}
}

// newProcWatch checks that every pid can be read.
func newProcWatch(pids []int) (*procWatch, error) {
	for _, pid := range pids {
		if _, err := readProc(pid); err != nil {
			return nil, fmt.Errorf("--pid %d: %w", pid, err)
		}
	}
	return &procWatch{pids: pids, period: 200 * time.Millisecond,
		first: make([]procSample, len(pids)), last: make([]procSample, len(pids)), maxRSS: make([]int64, len(pids))}, nil
}

// Start takes the first sample and starts the sampler goroutine.
func (w *procWatch) Start(ctx context.Context) {
	if w == nil || len(w.pids) == 0 {
		return
	}
	w.sample(true)
	ctx, w.cancel = context.WithCancel(ctx)
	w.done = make(chan struct{})
	go func() {
		defer close(w.done)
		t := time.NewTicker(w.period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				w.sample(false)
			}
		}
	}()
}

func (w *procWatch) sample(first bool) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, pid := range w.pids {
		s, err := readProc(pid)
		if err != nil {
			continue // the process exited: keep what was seen
		}
		if first {
			w.first[i] = s
			w.t0 = now
		}
		w.last[i] = s
		w.maxRSS[i] = max(w.maxRSS[i], s.rss)
	}
	w.t1 = now
}

// Stop takes the last sample, stops the sampler and reports; msgs is the
// number of messages handled in the window (for CPU per message).
func (w *procWatch) Stop(msgs uint64) []procUsage {
	if w == nil || len(w.pids) == 0 {
		return nil
	}
	w.cancel()
	<-w.done
	w.sample(false)
	w.mu.Lock()
	defer w.mu.Unlock()
	wall := w.t1.Sub(w.t0)
	out := make([]procUsage, len(w.pids))
	for i, pid := range w.pids {
		cpu := w.last[i].cpu - w.first[i].cpu
		u := procUsage{PID: pid, Name: procName(pid), RSSMaxMB: mb(w.maxRSS[i]), RSSEndMB: mb(w.last[i].rss),
			RSSStartMB: mb(w.first[i].rss), RSSPeakMB: mb(max(w.last[i].hwm, w.maxRSS[i]))}
		if wall > 0 {
			u.CPUPercent = math.Round(1000*cpu.Seconds()/wall.Seconds()) / 10
		}
		if msgs > 0 {
			u.CPUMicrosPerMsg = math.Round(10*float64(cpu.Microseconds())/float64(msgs)) / 10
		}
		out[i] = u
	}
	return out
}

func mb(b int64) float64 { return math.Round(float64(b)/(1<<20)*10) / 10 }

// findUDPOwner returns the pid of the process with a UDP socket bound to
// port, from /proc/net/udp{,6} and the socket links in /proc/*/fd: the
// bridge under test when it runs on this machine as the same user.
func findUDPOwner(port int) (int, error) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, ino := range udpInodes(b, port) {
			inodes[ino] = true
		}
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("no local UDP socket on port %d", port)
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*/fd")
	self := os.Getpid()
	for _, d := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		if pid == self {
			continue
		}
		fds, err := os.ReadDir(d)
		if err != nil {
			continue // another user's process
		}
		for _, fd := range fds {
			l, err := os.Readlink(filepath.Join(d, fd.Name()))
			if err != nil {
				continue
			}
			if ino, ok := strings.CutPrefix(l, "socket:["); ok && inodes[strings.TrimSuffix(ino, "]")] {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("UDP port %d: owner not found (another user's process?)", port)
}

// udpInodes returns the socket inodes of /proc/net/udp lines whose local
// port is port ("  sl  local_address rem_address   st ... inode").
func udpInodes(b []byte, port int) []string {
	var out []string
	want := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 || !strings.HasSuffix(f[1], want) {
			continue
		}
		out = append(out, f[9])
	}
	return out
}
