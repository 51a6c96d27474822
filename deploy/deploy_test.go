// Package deploy validates the deployment files: the Kubernetes manifests decode strictly into
// the API types (an unknown or misspelt field fails) and hang together; the compose file starts
// things in order. No cluster or Docker engine is needed (nor reachable here).
package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

type manifests struct {
	deployments map[string]*appsv1.Deployment
	pdbs        []*policyv1.PodDisruptionBudget
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	services    []*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
}

func load(t *testing.T) manifests {
	m := manifests{deployments: map[string]*appsv1.Deployment{}, configMaps: map[string]*corev1.ConfigMap{}}
	files, err := filepath.Glob("k8s/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		for i, doc := range bytes.Split(raw, []byte("\n---")) {
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			var tm metav1.TypeMeta
			require.NoError(t, yaml.Unmarshal(doc, &tm), "%s document %d", f, i+1)
			var obj any
			switch tm.APIVersion + "/" + tm.Kind {
			case "apps/v1/Deployment":
				d := &appsv1.Deployment{}
				obj, m.deployments[nameOf(t, doc)] = d, d
			case "policy/v1/PodDisruptionBudget":
				p := &policyv1.PodDisruptionBudget{}
				obj, m.pdbs = p, append(m.pdbs, p)
			case "autoscaling/v2/HorizontalPodAutoscaler":
				h := &autoscalingv2.HorizontalPodAutoscaler{}
				obj, m.hpas = h, append(m.hpas, h)
			case "v1/Service":
				s := &corev1.Service{}
				obj, m.services = s, append(m.services, s)
			case "v1/ConfigMap":
				c := &corev1.ConfigMap{}
				obj, m.configMaps[nameOf(t, doc)] = c, c
			default:
				t.Fatalf("%s document %d: unexpected kind %s %s", f, i+1, tm.APIVersion, tm.Kind)
			}
			require.NoError(t, yaml.UnmarshalStrict(doc, obj), "%s document %d (%s)", f, i+1, tm.Kind)
		}
	}
	return m
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

func nameOf(t *testing.T, doc []byte) string {
	var o metav1.ObjectMeta
	var wrap struct {
		Metadata *metav1.ObjectMeta `json:"metadata"`
	}
	wrap.Metadata = &o
	require.NoError(t, yaml.Unmarshal(doc, &wrap))
	return o.Name
}

func TestKubernetesManifests(t *testing.T) {
	m := load(t)
	for _, role := range []string{"receiver", "worker", "listeners"} {
		t.Run("the "+role+" deployment runs its role with probes and requests", func(t *testing.T) {
			d := m.deployments["intake-"+role]
			require.NotNil(t, d, "deployment intake-%s", role)
			sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
			require.NoError(t, err)
			assert.True(t, sel.Matches(labels.Set(d.Spec.Template.Labels)), "selector matches the pod labels")
			require.Len(t, d.Spec.Template.Spec.Containers, 1)
			c := d.Spec.Template.Spec.Containers[0]
			assert.Equal(t, []string{"serve", "--roles", role}, c.Args)
			require.NotNil(t, c.ReadinessProbe)
			require.NotNil(t, c.LivenessProbe)
			assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
			assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
			assert.False(t, c.Resources.Requests.Cpu().IsZero(), "cpu request")
			assert.False(t, c.Resources.Requests.Memory().IsZero(), "memory request")
			for _, e := range c.Env {
				assert.NotContains(t, []string{"INTAKE_ADMIN_TOKEN", "INTAKE_SECRET_KEYS", "INTAKE_SECRET_KEY"}, e.Name, "secrets come from the Secret")
			}
			var fromCM bool
			for _, src := range c.EnvFrom {
				if src.ConfigMapRef != nil {
					_, fromCM = m.configMaps[src.ConfigMapRef.Name]
				}
			}
			assert.True(t, fromCM, "the settings ConfigMap exists")
			var pdb bool
			for _, p := range m.pdbs {
				s, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
				require.NoError(t, err)
				pdb = pdb || s.Matches(labels.Set(d.Spec.Template.Labels))
			}
			assert.True(t, pdb, "a PodDisruptionBudget covers the pods")
		})
	}
	t.Run("every autoscaler and service targets a deployment", func(t *testing.T) {
		require.NotEmpty(t, m.hpas)
		for _, h := range m.hpas {
			assert.Contains(t, m.deployments, h.Spec.ScaleTargetRef.Name)
			assert.LessOrEqual(t, *h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
		for _, s := range m.services {
			matched := false
			for _, d := range m.deployments {
				matched = matched || labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels))
			}
			assert.True(t, matched, "service %s selects pods", s.Name)
		}
	})
}

// compose is the part of the compose file the checks read.
type compose struct {
	Services map[string]struct {
		Image       string         `json:"image"`
		Build       map[string]any `json:"build"`
		Healthcheck map[string]any `json:"healthcheck"`
		DependsOn   map[string]struct {
			Condition string `json:"condition"`
		} `json:"depends_on"`
		Restart string `json:"restart"`
	} `json:"services"`
}

func TestComposeFile(t *testing.T) {
	raw, err := os.ReadFile("../docker/compose.yaml")
	require.NoError(t, err)
	var c compose
	require.NoError(t, yaml.Unmarshal(raw, &c))
	require.NotEmpty(t, c.Services)
	for _, want := range []string{"postgresql", "temporal", "temporal-ui", "mongodb", "kafka", "pubsub", "temporal-namespace", "receiver", "worker", "listeners"} {
		assert.Contains(t, c.Services, want)
	}
	for name, s := range c.Services {
		t.Run(name, func(t *testing.T) {
			if s.Build == nil {
				_, tag, ok := strings.Cut(s.Image[strings.LastIndex(s.Image, "/")+1:], ":")
				assert.True(t, ok && tag != "" && tag != "latest", "image %q is pinned", s.Image)
				assert.NotContains(t, s.Image, "auto-setup", "the auto-setup image is deprecated")
			}
			oneShot := strings.HasPrefix(name, "temporal-") && name != "temporal-ui"
			if oneShot {
				assert.Equal(t, "on-failure", s.Restart)
			} else {
				assert.NotEmpty(t, s.Healthcheck, "a healthcheck")
				assert.Equal(t, "unless-stopped", s.Restart)
			}
			for dep, d := range s.DependsOn {
				require.Contains(t, c.Services, dep)
				switch d.Condition {
				case "service_healthy":
					assert.NotEmpty(t, c.Services[dep].Healthcheck, "%s waits for %s's health, which it must have", name, dep)
				case "service_completed_successfully":
					assert.Equal(t, "on-failure", c.Services[dep].Restart, "%s is a one-shot job", dep)
				default:
					t.Errorf("%s depends on %s without a condition", name, dep)
				}
			}
		})
	}
	t.Run("the namespace job registers every search attribute after Temporal is healthy", func(t *testing.T) {
		job := c.Services["temporal-namespace"]
		assert.Equal(t, "service_healthy", job.DependsOn["temporal"].Condition)
		for _, a := range []string{"IntakeIntegration", "IntakeOrigin", "IntakeTemplate", "IntakeOutcome"} {
			assert.Contains(t, string(raw), a)
		}
		assert.NotContains(t, string(raw), "|| true; done", "a failed registration must fail the job")
	})
	t.Run("no secret is baked into the build context", func(t *testing.T) {
		ignore, err := os.ReadFile("../.dockerignore")
		require.NoError(t, err)
		for _, p := range []string{".intake", ".git", "**/*.pem", ".env"} {
			assert.Contains(t, string(ignore), p)
		}
	})
}
