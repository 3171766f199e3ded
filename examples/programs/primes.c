/* Counts the primes below 100000 with a sieve. */
#include <stdio.h>
#include <string.h>

#define LIMIT 100000

int main(void) {
    static char composite[LIMIT];
    int count = 0;
    memset(composite, 0, sizeof composite);
    for (int i = 2; i < LIMIT; i++) {
        if (composite[i]) continue;
        count++;
        for (long j = (long)i * i; j < LIMIT; j += i) composite[j] = 1;
    }
    printf("%d primes below %d\n", count, LIMIT);
    return 0;
}
