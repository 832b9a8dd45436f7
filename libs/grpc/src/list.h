/* Intrusive doubly linked list (private to libs/grpc). */
#ifndef RTC_GRPC_LIST_H
#define RTC_GRPC_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct rtc_list {
    struct rtc_list *prev, *next;
} rtc_list;

static inline void rtc_list_init(rtc_list *l)
{
    l->prev = l->next = l;
}

static inline void rtc_list_add(rtc_list *head, rtc_list *l)
{
    l->next = head;
    l->prev = head->prev;
    head->prev->next = l;
    head->prev = l;
}

/* Unlink l and leave it self-linked, so a second del is harmless. */
static inline void rtc_list_del(rtc_list *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->prev = l->next = l;
}

static inline bool rtc_list_empty(const rtc_list *head)
{
    return head->next == head;
}

#define rtc_container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

#endif
