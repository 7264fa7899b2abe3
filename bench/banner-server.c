/*
 * The benchmark's backends: one process, one epoll loop, one listening socket per
 * backend address (127.1.x.y), so that it costs little per connection and is never
 * the bottleneck (the harness reports its CPU next to the checker's).
 *
 *   banner-server MODE PORT COUNT
 *     MODE  tcp   accept, then wait for the peer to close (connect checks)
 *           smtp  "220" greeting; 250 to HELO/EHLO, 221 to QUIT then close, 250 to anything else
 *           http  read the request head, answer "200 OK" with a 2-byte body, close
 *
 * Backend i listens on 127.1.(i / 250).(i % 250 + 1):PORT. Control on stdin, one
 * command a line, each answered with one line on stdout:
 *   ready?      "ready COUNT" (also printed once at start)
 *   count       "count ACCEPTED"    connections accepted so far, all backends
 *   kill I      close backend I's listener and its connections: connects are refused
 *   revive I    listen again (and answer again, if it was silent)
 *   silent I    keep accepting on backend I but never answer: checks time out
 *   quit        exit
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

enum mode { MODE_TCP, MODE_SMTP, MODE_HTTP };

#define MAX_FD 262144
#define BUF 512

struct conn {
  int backend;      /* -1: not a connection */
  int is_listener;
  int used;         /* bytes in buf */
  char buf[BUF];
};

static enum mode mode;
static int port, count, ep;
static int *listeners; /* fd per backend, -1 when killed */
static char *silent;   /* per backend */
static struct conn *conns;
static unsigned long long accepted;

static void backend_addr(int i, struct sockaddr_in *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_port = htons((uint16_t)port);
  sa->sin_addr.s_addr = htonl((127u << 24) | (1u << 16) | ((unsigned)(i / 250) << 8) | (unsigned)(i % 250 + 1));
}

static int listen_on(int i) {
  struct sockaddr_in sa;
  backend_addr(i, &sa);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 1024) < 0 || fd >= MAX_FD) {
    close(fd);
    return -1;
  }
  conns[fd].backend = i;
  conns[fd].is_listener = 1;
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  listeners[i] = fd;
  return fd;
}

static void drop(int fd) {
  conns[fd].backend = -1;
  conns[fd].is_listener = 0;
  conns[fd].used = 0;
  close(fd); /* also removes it from epoll */
}

static void say(int fd, const char *text) {
  /* Replies are a few bytes on a fresh socket: they fit the send buffer. */
  ssize_t n = send(fd, text, strlen(text), MSG_NOSIGNAL);
  (void)n;
}

static const char HTTP_OK[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

static void on_accept(int lfd) {
  int b = conns[lfd].backend;
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    if (fd >= MAX_FD) {
      close(fd);
      continue;
    }
    accepted++;
    conns[fd].backend = b;
    conns[fd].is_listener = 0;
    conns[fd].used = 0;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    if (mode == MODE_SMTP && !silent[b]) say(fd, "220 bench.invalid ESMTP banner-server\r\n");
  }
}

/* Handles what a client sent; returns 1 when the connection is finished. */
static int on_data(int fd) {
  struct conn *c = &conns[fd];
  for (;;) {
    ssize_t n = recv(fd, c->buf + c->used, BUF - 1 - (size_t)c->used, 0);
    if (n == 0) return 1;
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : 1;
    if (silent[c->backend] || mode == MODE_TCP) {
      c->used = 0; /* swallow */
      continue;
    }
    c->used += (int)n;
    c->buf[c->used] = 0;
    if (mode == MODE_HTTP) {
      if (strstr(c->buf, "\r\n\r\n") || strstr(c->buf, "\n\n")) {
        say(fd, HTTP_OK);
        return 1;
      }
      if (c->used >= BUF - 1) return 1;
      continue;
    }
    /* SMTP: answer each complete line. */
    char *start = c->buf, *nl;
    while ((nl = strchr(start, '\n'))) {
      if (strncasecmp(start, "QUIT", 4) == 0) {
        say(fd, "221 bye\r\n");
        return 1;
      }
      if (strncasecmp(start, "HELO", 4) == 0 || strncasecmp(start, "EHLO", 4) == 0)
        say(fd, "250 bench.invalid\r\n");
      else
        say(fd, "250 ok\r\n");
      start = nl + 1;
    }
    c->used = (int)strlen(start);
    memmove(c->buf, start, (size_t)c->used + 1);
    if (c->used >= BUF - 1) return 1;
  }
}

static void kill_backend(int i) {
  if (listeners[i] >= 0) drop(listeners[i]);
  listeners[i] = -1;
  /* Its open connections go too, like a crashed server's. */
  for (int fd = 0; fd < MAX_FD; fd++)
    if (conns[fd].backend == i && !conns[fd].is_listener) drop(fd);
}

static void control(void) {
  static char line[256];
  static int used;
  ssize_t n = read(0, line + used, sizeof line - 1 - (size_t)used);
  if (n <= 0) exit(0); /* harness gone */
  used += (int)n;
  line[used] = 0;
  char *start = line, *nl;
  while ((nl = strchr(start, '\n'))) {
    *nl = 0;
    int i = -1;
    char cmd[32] = "";
    sscanf(start, "%31s %d", cmd, &i);
    int valid = i >= 0 && i < count;
    if (strcmp(cmd, "count") == 0) {
      printf("count %llu\n", accepted);
    } else if (strcmp(cmd, "ready?") == 0) {
      printf("ready %d\n", count);
    } else if (strcmp(cmd, "kill") == 0 && valid) {
      kill_backend(i);
      printf("ok\n");
    } else if (strcmp(cmd, "revive") == 0 && valid) {
      silent[i] = 0;
      if (listeners[i] < 0 && listen_on(i) < 0) printf("error %s\n", strerror(errno));
      else printf("ok\n");
    } else if (strcmp(cmd, "silent") == 0 && valid) {
      silent[i] = 1;
      printf("ok\n");
    } else if (strcmp(cmd, "quit") == 0) {
      exit(0);
    } else {
      printf("error unknown command\n");
    }
    fflush(stdout);
    start = nl + 1;
  }
  used = (int)strlen(start);
  memmove(line, start, (size_t)used + 1);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: banner-server tcp|smtp|http PORT COUNT\n");
    return 64;
  }
  mode = strcmp(argv[1], "smtp") == 0 ? MODE_SMTP : strcmp(argv[1], "http") == 0 ? MODE_HTTP : MODE_TCP;
  port = atoi(argv[2]);
  count = atoi(argv[3]);
  if (count < 1 || count > 62500 || port < 1 || port > 65535) {
    fprintf(stderr, "banner-server: COUNT 1..62500, PORT 1..65535\n");
    return 64;
  }
  struct rlimit rl = {MAX_FD, MAX_FD};
  if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  conns = calloc(MAX_FD, sizeof *conns);
  listeners = malloc(sizeof(int) * (size_t)count);
  silent = calloc((size_t)count, 1);
  for (int fd = 0; fd < MAX_FD; fd++) conns[fd].backend = -1;
  ep = epoll_create1(EPOLL_CLOEXEC);
  for (int i = 0; i < count; i++) {
    if (listen_on(i) < 0) {
      fprintf(stderr, "banner-server: cannot listen for backend %d: %s\n", i, strerror(errno));
      return 1;
    }
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = 0};
  epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
  printf("ready %d\n", count);
  fflush(stdout);
  struct epoll_event events[512];
  for (;;) {
    int n = epoll_wait(ep, events, 512, -1);
    for (int k = 0; k < n; k++) {
      int fd = events[k].data.fd;
      if (fd == 0) {
        control();
        continue;
      }
      if (conns[fd].backend < 0) continue; /* closed earlier in this batch */
      if (conns[fd].is_listener) {
        on_accept(fd);
        continue;
      }
      if (on_data(fd) || (events[k].events & (EPOLLHUP | EPOLLERR))) drop(fd);
    }
  }
}
