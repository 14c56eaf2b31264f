//! Staff users: the people who log in to a merchant's tills.

use diesel::prelude::*;

use super::{Platform, schema::staff_users};
use crate::db::ids::{MerchantId, StaffId};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = staff_users, check_for_backend(diesel::pg::Pg))]
pub struct StaffUser {
    pub id: StaffId,
    pub merchant_id: MerchantId,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub active: bool,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = staff_users)]
pub struct NewStaffUser<'a> {
    pub id: StaffId,
    pub merchant_id: MerchantId,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub role: &'a str,
}

impl StaffUser {
    /// The active staff user with this email at the merchant with this
    /// slug, with the merchant's status.
    pub fn find_for_login(
        p: &mut Platform<'_>,
        merchant_slug: &str,
        email: &str,
    ) -> QueryResult<Option<(StaffUser, String)>> {
        use super::schema::merchants;
        staff_users::table
            .inner_join(merchants::table)
            .filter(merchants::slug.eq(merchant_slug))
            .filter(staff_users::email.eq(email.to_lowercase()))
            .filter(staff_users::active.eq(true))
            .select((StaffUser::as_select(), merchants::status))
            .first(p.conn)
            .optional()
    }

    pub fn insert(p: &mut Platform<'_>, new: &NewStaffUser<'_>) -> QueryResult<StaffUser> {
        diesel::insert_into(staff_users::table)
            .values(new)
            .returning(StaffUser::as_returning())
            .get_result(p.conn)
    }
}
