/* log: timestamped lines on stderr, prefixed with the calling function. */
#ifndef VMCKPT_LOG_H
#define VMCKPT_LOG_H

enum { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR };

void log_set_level(int level);
void log_write(int level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(...) log_write(LOG_LVL_DEBUG, __func__, __VA_ARGS__)
#define log_info(...) log_write(LOG_LVL_INFO, __func__, __VA_ARGS__)
#define log_warn(...) log_write(LOG_LVL_WARN, __func__, __VA_ARGS__)
#define log_error(...) log_write(LOG_LVL_ERROR, __func__, __VA_ARGS__)

#endif
