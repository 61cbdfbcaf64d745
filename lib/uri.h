/* uri: store URIs (ftp://, sftp://), parsed by libcurl's URL parser.
 *
 * A URI may carry a password; it is never shown: messages use uri_public(),
 * and a URI that does not parse is reported without its text. */
#ifndef VMCKPT_URI_H
#define VMCKPT_URI_H

struct uri {
    char *scheme, *user, *password, *host, *path, *query; /* decoded; NULL if absent */
    int port;                                             /* 0 if absent */
};

/* Parses text. VK_EINVAL (the message never quotes a password) when it is
 * not scheme://[user[:password]@]host[:port]/path[?query], has a control
 * character or a space, or a port out of range. *out: uri_clear(). */
int uri_parse(const char *text, struct uri *out);
void uri_clear(struct uri *u);
/* scheme://user@host:port/path (no password, no query). free(). */
char *uri_public(const struct uri *u);
/* The decoded value of query parameter key, or NULL. free(). */
char *uri_param(const struct uri *u, const char *key);
/* VK_EINVAL naming the first query parameter not in allowed (NULL-ended). */
int uri_check_params(const struct uri *u, const char *const *allowed);
/* 1 if text parses as a URI with a password in it. */
int uri_has_password(const char *text);
/* text with its password set to password (which needs no escaping by the
 * caller). *out: free(). */
int uri_with_password(const char *text, const char *password, char **out);

#endif
