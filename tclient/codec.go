package tclient

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/proto"
)

// Metadata of an encrypted payload: the whole original payload (metadata and data) is sealed,
// so not even its encoding is readable in the cluster.
const (
	EncodingEncrypted = "binary/encrypted"
	metaKeyID         = "encryption-key-id"
)

// Codec encrypts payloads with AES-256-GCM. The newest key encrypts; every key decrypts, found
// by the key id in the payload's metadata, so keys rotate like INTAKE_SECRET_KEYS.
type Codec struct {
	ids  []string
	aead []cipher.AEAD
}

// NewCodec derives one payload key from each secret key (newest first). The derivation keeps
// the payload keys apart from the keys that seal integration secrets.
func NewCodec(secretKeys [][]byte) (*Codec, error) {
	if len(secretKeys) == 0 {
		return nil, errors.New("the payload codec needs a secret key (INTAKE_SECRET_KEYS)")
	}
	c := &Codec{}
	for _, k := range secretKeys {
		m := hmac.New(sha256.New, k)
		m.Write([]byte("intake temporal payload codec v1"))
		key := m.Sum(nil)
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		id := sha256.Sum256(key)
		c.ids = append(c.ids, hex.EncodeToString(id[:8]))
		c.aead = append(c.aead, aead)
	}
	return c, nil
}

// Encode seals every payload with the newest key.
func (c *Codec) Encode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		plain, err := proto.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("encode payload: %w", err)
		}
		nonce := make([]byte, c.aead[0].NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			return nil, err
		}
		out[i] = &commonpb.Payload{
			Metadata: map[string][]byte{converter.MetadataEncoding: []byte(EncodingEncrypted), metaKeyID: []byte(c.ids[0])},
			Data:     c.aead[0].Seal(nonce, nonce, plain, []byte(c.ids[0])),
		}
	}
	return out, nil
}

// Decode opens sealed payloads and leaves others as they are (history written before the codec
// was turned on stays readable).
func (c *Codec) Decode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		if string(p.GetMetadata()[converter.MetadataEncoding]) != EncodingEncrypted {
			out[i] = p
			continue
		}
		id := string(p.GetMetadata()[metaKeyID])
		k := -1
		for j := range c.ids {
			if c.ids[j] == id {
				k = j
			}
		}
		if k < 0 {
			return nil, fmt.Errorf("payload sealed with key %q, which is not among INTAKE_SECRET_KEYS", id)
		}
		n := c.aead[k].NonceSize()
		if len(p.Data) < n {
			return nil, errors.New("sealed payload too short")
		}
		plain, err := c.aead[k].Open(nil, p.Data[:n], p.Data[n:], []byte(id))
		if err != nil {
			return nil, fmt.Errorf("open sealed payload: %w", err)
		}
		var orig commonpb.Payload
		if err := proto.Unmarshal(plain, &orig); err != nil {
			return nil, fmt.Errorf("decode sealed payload: %w", err)
		}
		out[i] = &orig
	}
	return out, nil
}

// DataConverter is the SDK's default converter with the codec applied to every payload.
func (c *Codec) DataConverter() converter.DataConverter {
	return converter.NewCodecDataConverter(converter.GetDefaultDataConverter(), c)
}

// CodecServer serves the Temporal UI's (and the temporal CLI's) remote codec protocol: POST
// .../encode and .../decode with {"payloads": [...]}. The browser calls it from the UI's origin,
// so it answers CORS for the allowed origins; every POST needs the bearer token.
type CodecServer struct {
	Codec   *Codec
	Token   string
	Origins []string // allowed browser origins ("*" allows any; credentials are then not allowed)
}

// maxCodecBody bounds a request: a workflow's payloads, each under Temporal's 2 MB limit.
const maxCodecBody = 16 << 20

func (s *CodecServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if origin := r.Header.Get("Origin"); origin != "" {
		for _, o := range s.Origins {
			if o == "*" || strings.EqualFold(strings.TrimRight(o, "/"), origin) {
				w.Header().Set("Access-Control-Allow-Origin", origin)
				w.Header().Set("Access-Control-Allow-Credentials", "true")
				w.Header().Set("Access-Control-Allow-Methods", "POST, OPTIONS")
				w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Namespace")
				w.Header().Set("Access-Control-Max-Age", "600")
				w.Header().Add("Vary", "Origin")
				break
			}
		}
	}
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "the codec endpoint takes POST")
		return
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || s.Token == "" || subtle.ConstantTimeCompare([]byte(token), []byte(s.Token)) != 1 {
		writeError(w, http.StatusUnauthorized, "unauthorized", "a valid codec bearer token is required")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxCodecBody)
	converter.NewPayloadCodecHTTPHandler(s.Codec).ServeHTTP(w, r)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":%q,"message":%q,"details":null}`, code, msg)
}
