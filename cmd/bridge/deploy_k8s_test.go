package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// k8sDir holds the Kubernetes example of README "Running several bridges".
const k8sDir = "../../deploy/kubernetes"

// k8sObject is the part of a Kubernetes object the example's checks read.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		// StatefulSet
		Replicas    int    `yaml:"replicas"`
		ServiceName string `yaml:"serviceName"`
		Template    struct {
			Metadata struct {
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec struct {
				Containers []k8sContainer `yaml:"containers"`
				Volumes    []struct {
					Name      string `yaml:"name"`
					ConfigMap struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
		// Service
		Type                  string `yaml:"type"`
		ClusterIP             string `yaml:"clusterIP"`
		SessionAffinity       string `yaml:"sessionAffinity"`
		ExternalTrafficPolicy string `yaml:"externalTrafficPolicy"`
		Ports                 []struct {
			Name       string    `yaml:"name"`
			Port       int       `yaml:"port"`
			TargetPort yaml.Node `yaml:"targetPort"`
			Protocol   string    `yaml:"protocol"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

// k8sContainer is the part of a pod's container the checks read.
type k8sContainer struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom struct {
			FieldRef struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	LivenessProbe  k8sProbe `yaml:"livenessProbe"`
	ReadinessProbe k8sProbe `yaml:"readinessProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
}

// port resolves a port given by number or by the name of one of c's ports,
// with its protocol (TCP when not given).
func (c *k8sContainer) port(t *testing.T, n yaml.Node) (int, string) {
	t.Helper()
	if p, err := strconv.Atoi(n.Value); err == nil {
		for _, cp := range c.Ports {
			if cp.ContainerPort == p && cp.Protocol != "" {
				return p, cp.Protocol
			}
		}
		return p, "TCP"
	}
	for _, p := range c.Ports {
		if p.Name == n.Value {
			proto := p.Protocol
			if proto == "" {
				proto = "TCP"
			}
			return p.ContainerPort, proto
		}
	}
	t.Fatalf("container %s has no port %q", c.Name, n.Value)
	return 0, ""
}

// readK8sObjects parses every YAML document of every file in dir.
func readK8sObjects(t *testing.T, dir string) []k8sObject {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no YAML in %s: %v", dir, err)
	}
	var objs []k8sObject
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.Kind == "" || o.APIVersion == "" || o.Metadata.Name == "" {
				t.Fatalf("%s: a document without kind, apiVersion or metadata.name", f)
			}
			objs = append(objs, o)
		}
	}
	return objs
}

func listenPort(t *testing.T, key, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", key, addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%s %q: %v", key, addr, err)
	}
	return n
}

// TestKubernetesExample checks deploy/kubernetes against the bridge: the
// ConfigMap's config and rules pass `bridge check`, each pod's instance is
// its pod name through the environment override the config loader reads,
// and the probes, scrape annotations and Services use the ports the config
// listens on.
func TestKubernetesExample(t *testing.T) {
	objs := readK8sObjects(t, k8sDir)
	var cms, sts []k8sObject
	var lb, headless *k8sObject
	for i := range objs {
		o := &objs[i]
		switch o.Kind {
		case "ConfigMap":
			cms = append(cms, *o)
		case "StatefulSet":
			sts = append(sts, *o)
		case "Service":
			if o.Spec.ClusterIP == "None" {
				headless = o
			} else {
				lb = o
			}
		default:
			t.Errorf("unexpected kind %s", o.Kind)
		}
	}
	if len(cms) != 1 || len(sts) != 1 || lb == nil || headless == nil {
		t.Fatalf("want one ConfigMap, one StatefulSet, a Service and a headless Service; got %d, %d, %v, %v",
			len(cms), len(sts), lb != nil, headless != nil)
	}
	cm, ss := cms[0], sts[0]

	if ss.Spec.Replicas != 3 {
		t.Errorf("replicas = %d, want 3", ss.Spec.Replicas)
	}
	if ss.Spec.ServiceName != headless.Metadata.Name {
		t.Errorf("serviceName %q, headless Service %q", ss.Spec.ServiceName, headless.Metadata.Name)
	}
	cs := ss.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("%d containers, want 1", len(cs))
	}
	c := &cs[0]

	// The instance is the pod name, through the variable the loader reads.
	instanceVar := ""
	for _, e := range c.Env {
		if e.ValueFrom.FieldRef.FieldPath == "metadata.name" {
			instanceVar = e.Name
		}
	}
	if instanceVar == "" {
		t.Fatal("no env var set from metadata.name")
	}

	// The config is read where the ConfigMap is mounted.
	if len(c.Args) != 3 || c.Args[0] != "run" || c.Args[1] != "--config" {
		t.Fatalf("args %q, want run --config <file>", c.Args)
	}
	mountDir, file := filepath.Dir(c.Args[2]), filepath.Base(c.Args[2])
	mounted := false
	for _, m := range c.VolumeMounts {
		for _, v := range ss.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && m.MountPath == mountDir && v.ConfigMap.Name == cm.Metadata.Name {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Fatalf("ConfigMap %s is not mounted at %s", cm.Metadata.Name, mountDir)
	}
	if _, ok := cm.Data[file]; !ok {
		t.Fatalf("ConfigMap has no %s", file)
	}

	// The ConfigMap as the pod sees it: bridge check passes, and the pod
	// name becomes the instance.
	dir := t.TempDir()
	for name, body := range cm.Data {
		writeFile(t, dir, name, body)
	}
	cfgPath := filepath.Join(dir, file)
	t.Setenv(instanceVar, "coap-bridge-1")
	var out, errb bytes.Buffer
	if code := execute([]string{"check", "--config", cfgPath}, &out, &errb); code != 0 {
		t.Fatalf("bridge check: exit %d, stderr %q", code, errb.String())
	}
	if !strings.Contains(out.String(), "1 ingress") || !strings.Contains(out.String(), "1 command") {
		t.Errorf("bridge check loaded other rules than the ConfigMap's: %q", out.String())
	}
	cfg, err := loadConfig(cfgPath, true)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.Instance != "coap-bridge-1" {
		t.Errorf("cluster.instance = %q with %s=coap-bridge-1", cfg.Cluster.Instance, instanceVar)
	}
	if cfg.Cluster.Name == "" || cfg.MQTT.Broker == "embedded" {
		t.Errorf("cluster %q on broker %q: want a named cluster on a remote broker", cfg.Cluster.Name, cfg.MQTT.Broker)
	}

	// Probes and scraping on the bridge's HTTP endpoints.
	httpPort := listenPort(t, "http.listen", cfg.HTTP.Listen)
	for _, p := range []struct {
		name, path string
		probe      k8sProbe
	}{
		{"liveness", "/healthz", c.LivenessProbe},
		{"readiness", "/readyz", c.ReadinessProbe},
	} {
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s probe path %q, want %q", p.name, p.probe.HTTPGet.Path, p.path)
		}
		if port, _ := c.port(t, p.probe.HTTPGet.Port); port != httpPort {
			t.Errorf("%s probe port %d, http.listen port %d", p.name, port, httpPort)
		}
	}
	ann := ss.Spec.Template.Metadata.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/path"] != "/metrics" ||
		ann["prometheus.io/port"] != strconv.Itoa(httpPort) {
		t.Errorf("scrape annotations %v, want /metrics on %d", ann, httpPort)
	}

	// The Services carry exactly the CoAP listeners, over UDP.
	want := map[int]bool{listenPort(t, "coap.listen", cfg.CoAP.Listen): true}
	if cfg.CoAP.DTLS.Listen != "" {
		want[listenPort(t, "coap.dtls.listen", cfg.CoAP.DTLS.Listen)] = true
	}
	for _, svc := range []*k8sObject{lb, headless} {
		got := map[int]bool{}
		for _, sp := range svc.Spec.Ports {
			target, proto := c.port(t, sp.TargetPort)
			if sp.Protocol != "" && sp.Protocol != proto {
				t.Errorf("Service %s port %s: protocol %s, container port %s", svc.Metadata.Name, sp.Name, sp.Protocol, proto)
			}
			if proto == "UDP" {
				got[target] = true
			}
		}
		for p := range want {
			if !got[p] {
				t.Errorf("Service %s does not carry UDP %d (the config's CoAP listener)", svc.Metadata.Name, p)
			}
		}
		for p := range got {
			if !want[p] {
				t.Errorf("Service %s carries UDP %d, which the config does not listen on", svc.Metadata.Name, p)
			}
		}
	}
	// Learned devices and DTLS sessions are per member: one source address
	// must stay on one member, and the pods must see the real one.
	if lb.Spec.SessionAffinity != "ClientIP" {
		t.Errorf("Service %s sessionAffinity %q, want ClientIP", lb.Metadata.Name, lb.Spec.SessionAffinity)
	}
	if (lb.Spec.Type == "LoadBalancer" || lb.Spec.Type == "NodePort") && lb.Spec.ExternalTrafficPolicy != "Local" {
		t.Errorf("Service %s externalTrafficPolicy %q, want Local", lb.Metadata.Name, lb.Spec.ExternalTrafficPolicy)
	}
}
