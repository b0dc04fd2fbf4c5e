/* Version comparison and validation. */
#include "fleet/version.h"
#include "harness.h"

HARNESS_DEFINE;

TEST(test_numeric_components_compare_as_numbers)
{
    CHECK(fleet_version_compare("2.10.0", "2.9.1") > 0);
    CHECK(fleet_version_compare("2.9.1", "2.10.0") < 0);
    CHECK(fleet_version_compare("10.0.0", "9.99.99") > 0);
    CHECK(fleet_version_compare("2.2.0", "2.2.0") == 0);
    CHECK(fleet_version_compare("1.0.1", "1.0.0") > 0);
}

TEST(test_missing_components_count_as_zero)
{
    CHECK(fleet_version_compare("2.3", "2.3.0") == 0);
    CHECK(fleet_version_compare("2", "2.0.1") < 0);
}

TEST(test_leading_v_is_ignored)
{
    CHECK(fleet_version_compare("v2.3.0", "2.3.0") == 0);
    CHECK(fleet_version_compare("V2.4.0", "v2.3.9") > 0);
}

TEST(test_prerelease_sorts_before_release)
{
    CHECK(fleet_version_compare("2.3.0-rc1", "2.3.0") < 0);
    CHECK(fleet_version_compare("2.3.0", "2.3.0-rc1") > 0);
    CHECK(fleet_version_compare("2.3.0-rc1", "2.3.0-rc2") < 0);
    CHECK(fleet_version_compare("2.3.0-rc1", "2.2.9") > 0);
    CHECK(fleet_version_compare("2.3.0-beta", "2.3.0-beta") == 0);
    CHECK(fleet_version_compare("2.3.0+build7", "2.3.0") == 0);
}

TEST(test_garbage_sorts_after_versions_and_compares_as_text)
{
    CHECK(fleet_version_compare("abc", "1.0.0") > 0);
    CHECK(fleet_version_compare("1.0.0", "abc") < 0);
    CHECK(fleet_version_compare("abc", "abd") < 0);
    CHECK(fleet_version_compare("1..2", "1.2") > 0);
    CHECK(fleet_version_compare("", "1.0") > 0);
    CHECK(fleet_version_compare("99999999999999.0", "1.0") > 0);
    CHECK(fleet_version_compare(NULL, "1.0") < 0);
    CHECK(fleet_version_compare(NULL, NULL) == 0);
}

TEST(test_version_validation)
{
    CHECK(fleet_version_is_valid("2.3.0"));
    CHECK(fleet_version_is_valid("2.3.0-rc.1+abc"));
    CHECK(!fleet_version_is_valid(""));
    CHECK(!fleet_version_is_valid(NULL));
    CHECK(!fleet_version_is_valid("2.3 .0"));
    CHECK(!fleet_version_is_valid("2.3\"0"));
    CHECK(!fleet_version_is_valid("\xc3\xa9"));
    CHECK(!fleet_version_is_valid("123456789012345678901234567890123"));
    CHECK(fleet_version_is_valid("12345678901234567890123456789012"));
}

int main(void)
{
    RUN(test_numeric_components_compare_as_numbers);
    RUN(test_missing_components_count_as_zero);
    RUN(test_leading_v_is_ignored);
    RUN(test_prerelease_sorts_before_release);
    RUN(test_garbage_sorts_after_versions_and_compares_as_text);
    RUN(test_version_validation);
    return HARNESS_RESULT();
}
