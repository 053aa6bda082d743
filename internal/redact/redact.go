// Package redact is htcstream's one policy for secrets in URLs: what of a
// camera's, a webhook's or a broker's address may appear in logs, errors,
// metrics labels and stream names.
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// URL hides the credentials of a URL for messages, logs, stream names and
// webhook names: the password of its user info (rtsp://user:pass@host/…) and the
// values of query parameters that carry secrets (?token=…, ?password=…,
// ?key=…, ?access_token=…, ?signature=…; secretParam). Anything else
// comes back unchanged.
func URL(raw string) string {
	if !strings.Contains(raw, "://") {
		return raw
	}
	return redactQuery(redactUser(raw))
}

func redactUser(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// An unparsable URL may still carry credentials, maybe with a '/'
		// in the password: hide everything between the scheme and the
		// last '@'.
		return redactAuthority(raw)
	}
	if u.User == nil {
		return raw
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// secretParam matches a URL query parameter whose name says it carries a
// secret (token, access_token, password, passwd, pwd, pass, key, apikey,
// api_key, secret, signature, sig, auth, credential, in any case, as a
// whole name or its last _/- separated part) up to its value, which it
// captures for replacement. It works on free text too (FFmpeg's messages),
// where a URL ends at white space or a quote.
var secretParam = regexp.MustCompile(`(?i)([?&;](?:[^=&;#\s'"]*[_-])?(?:access[_-]?token|token|password|passwd|pwd|pass|api[_-]?key|key|secret|signature|sig|auth|credentials?)=)[^&;#\s'"]*`)

// redactQuery hides the values of a URL's secret query parameters.
func redactQuery(s string) string {
	if !strings.ContainsAny(s, "?&;") {
		return s
	}
	return secretParam.ReplaceAllString(s, "${1}xxxxx")
}

func redactAuthority(raw string) string {
	i := strings.Index(raw, "://")
	rest := raw[i+3:]
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return raw
	}
	return raw[:i+3] + "xxxxx" + rest[at:]
}

// userinfo matches the credentials part of a URL inside free text.
var userinfo = regexp.MustCompile(`://[^/\s@]*@`)

// Text hides URL credentials inside free text (FFmpeg's messages: some
// protocols print the URL they open, password and query included). In text
// a URL's extent is a guess, so all of its user info goes, not only the
// password.
func Text(msg string) string {
	return redactQuery(userinfo.ReplaceAllString(msg, "://xxxxx@"))
}
