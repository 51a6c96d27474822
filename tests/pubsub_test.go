package tests

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	ps "cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
)

// startPubSubEmulator starts Google's emulator (offline, on a free port), or the in-process
// pstest server where gcloud is absent, and returns its host:port.
func startPubSubEmulator(t *testing.T) string {
	if _, err := exec.LookPath("gcloud"); err != nil {
		t.Log("gcloud not found: using the in-process pstest server")
		srv := pstest.NewServer()
		t.Cleanup(func() { _ = srv.Close() })
		return srv.Addr
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command("gcloud", "beta", "emulators", "pubsub", "start", "--host-port="+addr, "--data-dir="+t.TempDir(), "--quiet")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // gcloud starts a java child: stop the group
	out, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Server started") {
				close(ready)
				for sc.Scan() {
				}
				return
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(90 * time.Second):
		t.Fatal("the Pub/Sub emulator did not start")
	}
	return addr
}

// createFeed creates a topic and a subscription to it in the emulator; it answers the topic's path.
func createFeed(t *testing.T, c *ps.Client, project, topic, subscription string) string {
	ctx := context.Background()
	path := "projects/" + project + "/topics/" + topic
	_, err := c.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: path})
	require.NoError(t, err)
	_, err = c.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name: "projects/" + project + "/subscriptions/" + subscription, Topic: path, AckDeadlineSeconds: 10})
	require.NoError(t, err)
	return path
}

func assetMessage(i int) *ps.Message {
	return &ps.Message{
		Data:       []byte(fmt.Sprintf(`{"asset":{"name":"//compute.googleapis.com/projects/p1/zones/z/instances/vm-%03d","assetType":"compute.googleapis.com/Instance","resource":{"location":"z","data":{"name":"vm-%03d","status":"RUNNING"}},"updateTime":"2026-11-20T09:00:00Z"},"priorAssetState":"PRESENT"}`, i, i)),
		Attributes: map[string]string{"Feed": "assets"},
	}
}

func TestPubSubListener(t *testing.T) {
	emu := startPubSubEmulator(t)
	t.Setenv("PUBSUB_EMULATOR_HOST", emu)
	ctx := context.Background()
	const project = "intake-test"
	c, err := ps.NewClient(ctx, project)
	require.NoError(t, err)
	defer c.Close()
	topic := createFeed(t, c, project, "assets", "asset-feed")
	pub := c.Publisher(topic)
	defer pub.Stop()
	publish := func(from, to int) {
		var results []*ps.PublishResult
		for i := from; i < to; i++ {
			results = append(results, pub.Publish(ctx, assetMessage(i)))
		}
		for _, r := range results {
			_, err := r.Get(ctx)
			require.NoError(t, err)
		}
	}

	s := startDev(t)
	env := []string{"PUBSUB_EMULATOR_HOST=" + emu}
	args := []string{"--pubsub-project", project}
	count := func(path string) int {
		var items []map[string]any
		s.request("GET", path, nil, true, &items)
		return len(items)
	}

	// Temporal lost after the listener started: every start fails, every message is nacked and
	// comes back.
	link := startProxy(t, s.addr("temporal"), true)
	dead := startListener(t, s, link.addr(), env, args...)
	require.Eventually(t, func() bool { return strings.Contains(dead.logs.String(), "pubsub subscriber starting") },
		time.Minute, 100*time.Millisecond)
	link.set(false)
	publish(0, 50)
	require.Eventually(t, func() bool { return strings.Contains(dead.logs.String(), "message nacked for redelivery") },
		time.Minute, 100*time.Millisecond)
	// A clean stop (the emulator keeps messages leased to a stream killed with -9 for a long time;
	// Kafka's test covers kill -9).
	dead.stop()

	startListener(t, s, s.addr("temporal"), env, args...)
	publish(50, 200)
	require.Eventually(t, func() bool { return count("/api/v1/entities?template=gcp_asset&limit=1000") == 200 }, 3*time.Minute, 500*time.Millisecond)
	require.Eventually(t, func() bool {
		return count("/api/v1/audit_logs?integration=gcp_assets&origin=PUBSUB&status=SUCCESS&limit=1000") >= 200
	}, time.Minute, 500*time.Millisecond)
	time.Sleep(3 * time.Second)
	assert.Equal(t, 200, count("/api/v1/audit_logs?integration=gcp_assets&origin=PUBSUB&status=SUCCESS&limit=1000"), "exactly once")

	// A deleted asset is deleted.
	_, err = pub.Publish(ctx, &ps.Message{Data: []byte(`{"asset":{"name":"//compute.googleapis.com/projects/p1/zones/z/instances/vm-007","assetType":"compute.googleapis.com/Instance","updateTime":"2026-11-21T09:00:00Z"},"deleted":true}`)}).Get(ctx)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		code, _ := s.request("GET", "/api/v1/entities/gcp_asset/compute.googleapis.com/projects/p1/zones/z/instances/vm-007", nil, true, nil)
		return code == 404
	}, time.Minute, 300*time.Millisecond)
	var deletes []intake.AuditEntry
	s.request("GET", "/api/v1/audit_logs?integration=gcp_assets&action=DELETE", nil, true, &deletes)
	require.Len(t, deletes, 1)
	var rec []intake.DeliveryRecord
	s.request("GET", "/api/v1/deliveries?integration=gcp_assets&limit=1", nil, true, &rec)
	require.Len(t, rec, 1)
	assert.Equal(t, intake.OriginPubSub, rec[0].Origin)
	assert.True(t, strings.HasPrefix(rec[0].WorkflowID, "ingest.gcp_assets.asset-feed."))

	// Batch mode: a copy of the integration on a subscription of its own, in batches of 25.
	batchTopic := createFeed(t, c, project, "assets-batch", "asset-batch")
	var in intake.Integration
	code, _ := s.request("GET", "/api/v1/integrations/gcp_assets", nil, true, &in)
	require.Equal(t, 200, code)
	in.Identifier = "gcp_assets_batch"
	in.Source = &intake.Source{Kind: intake.SourcePubSub, Subscription: "asset-batch", Batch: &intake.Batch{MaxRecords: 25, MaxWait: "100ms"}}
	code, _ = s.request("PUT", "/api/v1/integrations/gcp_assets_batch", in, true, nil)
	require.Contains(t, []int{200, 201}, code)
	bpub := c.Publisher(batchTopic)
	defer bpub.Stop()
	var results []*ps.PublishResult
	for i := 300; i < 400; i++ {
		results = append(results, bpub.Publish(ctx, assetMessage(i)))
	}
	for _, r := range results {
		_, err := r.Get(ctx)
		require.NoError(t, err)
	}
	succeeded := "/api/v1/deliveries?integration=gcp_assets_batch&status=succeeded&limit=1000"
	require.Eventually(t, func() bool { return count(succeeded) == 100 }, 3*time.Minute, 500*time.Millisecond)
	time.Sleep(2 * time.Second)
	assert.Equal(t, 100, count("/api/v1/audit_logs?integration=gcp_assets_batch&origin=PUBSUB&status=SUCCESS&limit=1000"), "exactly once")
	s.request("GET", succeeded, nil, true, &rec)
	batches := map[string]bool{}
	for _, r := range rec {
		assert.Regexp(t, `^gcp_assets_batch\.asset-batch\.`, r.ID, "each message keeps its own delivery")
		assert.True(t, strings.HasPrefix(r.WorkflowID, "ingest-batch.gcp_assets_batch."), r.WorkflowID)
		batches[r.WorkflowID] = true
	}
	assert.Less(t, len(batches), 100, "messages ran in batches")
}
