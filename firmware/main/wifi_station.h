/* Wi-Fi station bring-up (credentials from menuconfig). */
#pragma once

#include <stdint.h>

#include "esp_err.h"

/* Starts Wi-Fi, keeps reconnecting, and waits up to timeout_ms for an IP. */
esp_err_t wifi_station_start(uint32_t timeout_ms);
