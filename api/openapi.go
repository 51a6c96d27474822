package api

import (
	_ "embed"
	"net/http"

	"github.com/gin-gonic/gin"
	"sigs.k8s.io/yaml"
)

// openAPIYAML describes every route the router serves (kept true by TestOpenAPIDescribesEveryRoute
// and the end-to-end conformance test); it is written in YAML for people and served as JSON.
//
//go:embed openapi.yaml
var openAPIYAML []byte

// OpenAPI is the description as served at /api/v1/openapi.json.
var OpenAPI = mustJSON(openAPIYAML)

func mustJSON(y []byte) []byte {
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		panic("api/openapi.yaml: " + err.Error()) // caught by every test of this package
	}
	return j
}

func serveOpenAPI(c *gin.Context) {
	c.Data(http.StatusOK, "application/json", OpenAPI)
}
