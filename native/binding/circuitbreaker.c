/* circuitbreaker: not built yet; its part does nothing. */
#include "fs_binding.h"

const fs_part fs_breaker_part = {0};
