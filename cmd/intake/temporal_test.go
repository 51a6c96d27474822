package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
)

func TestTemporalCompression(t *testing.T) {
	for _, tc := range []struct {
		setting, addr string
		want          client.GrpcCompression
	}{
		{"auto", "127.0.0.1:7233", &client.GrpcCompressionNone{}},
		{"", "localhost:7233", &client.GrpcCompressionNone{}},
		{"auto", "[::1]:7233", &client.GrpcCompressionNone{}},
		{"auto", "temporal.prod:7233", &client.GrpcCompressionGzip{}},
		{"auto", "10.0.0.5:7233", &client.GrpcCompressionGzip{}},
		{"gzip", "127.0.0.1:7233", &client.GrpcCompressionGzip{}},
		{"none", "temporal.prod:7233", &client.GrpcCompressionNone{}},
	} {
		s := settings{TemporalCompression: tc.setting}
		got, err := s.temporalCompression(tc.addr)
		require.NoError(t, err)
		assert.IsType(t, tc.want, got, "%q to %s", tc.setting, tc.addr)
	}
	s := settings{TemporalCompression: "zstd"}
	_, err := s.temporalCompression("127.0.0.1:7233")
	assert.ErrorContains(t, err, `INTAKE_TEMPORAL_COMPRESSION takes "gzip", "none" or "auto", not "zstd"`)
}
